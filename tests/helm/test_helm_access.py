"""Gateway access control, overload bound and drain settings as the chart renders them."""

from __future__ import annotations

import pytest


def _gateway(rendered) -> tuple[dict, dict]:
    deployment = rendered.one("Deployment", "-gateway")
    pod = rendered.pod_spec(deployment)
    return pod, pod["containers"][0]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_auth_is_on_by_default_with_keys_from_a_secret_directory(defaults) -> None:
    pod, gateway = _gateway(defaults)
    env = _env(gateway)
    assert env["GATEWAY_AUTH__ENABLED"] == "true"
    assert env["GATEWAY_AUTH__KEYS_FILE"] == "/etc/gateway/auth/keys.yaml"
    assert int(env["GATEWAY_AUTH__RELOAD_INTERVAL_S"]) >= 1
    mount = next(m for m in gateway["volumeMounts"] if m["mountPath"] == "/etc/gateway/auth")
    # No subPath: kubelet only refreshes whole-directory Secret mounts (key rotation).
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert volume["secretName"] == "rel-inference-gateway-api-keys"
    assert volume["items"] == [{"key": "keys.yaml", "path": "keys.yaml"}]
    assert volume["defaultMode"] == 0o440


def test_keys_secret_is_never_created_by_the_chart(defaults) -> None:
    names = [s["metadata"]["name"] for s in defaults.of_kind("Secret")]
    assert "rel-inference-gateway-api-keys" not in names


def test_an_existing_secret_and_key_can_be_named(render) -> None:
    rendered = render(
        set_values=["gateway.auth.existingSecret=team-keys", "gateway.auth.existingSecretKey=k.yml"]
    )
    pod, _ = _gateway(rendered)
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")["secret"]
    assert volume["secretName"] == "team-keys"
    assert volume["items"] == [{"key": "k.yml", "path": "keys.yaml"}]


def test_auth_can_be_disabled_explicitly_and_the_notes_warn(render, helm) -> None:
    pod, gateway = _gateway(render(set_values=["gateway.auth.enabled=false"]))
    env = _env(gateway)
    assert env["GATEWAY_AUTH__ENABLED"] == "false"
    assert "GATEWAY_AUTH__KEYS_FILE" not in env
    assert all(v["name"] != "api-keys" for v in pod["volumes"])
    out = helm(
        "install", "rel", "helm/inference-gateway", "--dry-run=client", "--namespace", "scoring",
        "--set", "gateway.auth.enabled=false",
    )  # fmt: skip
    assert "WARNING: gateway.auth.enabled is false" in out


def test_notes_show_how_to_mint_a_key_and_send_it(helm) -> None:
    out = helm("install", "rel", "helm/inference-gateway", "--dry-run=client", "-n", "scoring")
    notes = out.partition("NOTES:")[2]
    assert "python -m gateway keys create --keys-file keys.yaml" in notes
    assert "create secret generic rel-inference-gateway-api-keys" in notes
    assert "Authorization: Bearer $GATEWAY_API_KEY" in notes


def test_overload_rate_limit_and_drain_settings_reach_the_gateway(render) -> None:
    rendered = render(
        set_values=[
            "gateway.maxInFlight=64",
            "gateway.rateLimit.defaultPerSecond=50",
            "gateway.rateLimit.defaultBurst=100",
            "gateway.shutdownGraceSeconds=20",
        ]
    )
    env = _env(_gateway(rendered)[1])
    assert env["GATEWAY_LIMITS__MAX_IN_FLIGHT"] == "64"
    assert env["GATEWAY_RATE_LIMIT__DEFAULT_PER_S"] == "50"
    assert env["GATEWAY_RATE_LIMIT__DEFAULT_BURST"] == "100"
    assert env["GATEWAY_SHUTDOWN_GRACE_S"] == "20"


def test_default_grace_period_covers_prestop_and_both_drains(defaults) -> None:
    pod, gateway = _gateway(defaults)
    pre_stop = int(gateway["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = int(_env(gateway)["GATEWAY_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


def test_a_grace_period_shorter_than_the_drain_fails_with_a_readable_message(render) -> None:
    with pytest.raises(AssertionError, match="must cover preStopSleepSeconds"):
        render(set_values=["gateway.terminationGracePeriodSeconds=12"])


@pytest.mark.parametrize(
    ("set_value", "message"),
    [
        ("gateway.auth.keys=abc", "at '/gateway/auth': additional properties 'keys' not allowed"),
        ("gateway.auth.existingSecret=Bad_Name", "at '/gateway/auth/existingSecret'"),
        ("gateway.maxInFlight=-1", "at '/gateway/maxInFlight'"),
        ("gateway.rateLimit.defaultPerSecond=-5", "at '/gateway/rateLimit/defaultPerSecond'"),
    ],
)
def test_schema_rejects_key_material_and_bad_limits(render, set_value: str, message: str) -> None:
    with pytest.raises(AssertionError) as failure:
        render(set_values=[set_value])
    assert message in str(failure.value)
