"""The stream workers (event-driven lane): Deployment, KEDA ScaledObject, NetworkPolicy."""

from __future__ import annotations

from pathlib import Path

import pytest

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "inference-gateway"
CI = CHART_DIR / "ci"
STREAM_VALUES = CI / "stream-worker-values.yaml"
WORKER = "rel-inference-gateway-stream-worker"


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _value(container: dict, name: str) -> str:
    return _env(container)[name]["value"]


@pytest.fixture(scope="module")
def lane(render):
    return render([STREAM_VALUES])


def _worker_container(rendered) -> dict:
    (container,) = rendered.pod_spec(rendered.one("Deployment", "-stream-worker"))["containers"]
    return container


def test_stream_workers_are_off_by_default(defaults) -> None:
    assert defaults.find("Deployment", "-stream-worker") is None
    assert not [o for o in defaults.objects if o["metadata"]["name"].startswith(WORKER)]


def test_worker_runs_the_gateway_image_with_the_gateway_env_and_volumes(lane) -> None:
    worker = lane.one("Deployment", "-stream-worker")
    container = _worker_container(lane)
    gateway_pod = lane.pod_spec(lane.one("Deployment", "-gateway"))
    (gateway,) = gateway_pod["containers"]
    assert container["args"] == ["stream-worker"]
    assert container["image"] == gateway["image"]
    for name in (
        "GATEWAY_SPEC_PATH",
        "GATEWAY_REDIS__URL",
        "GATEWAY_REDIS__PASSWORD_FILE",
        "GATEWAY_TRITON__URL",
    ):
        assert _value(container, name) == _value(gateway, name), name
    # The shared mounts (model spec, Redis password, /tmp), from the same volumes.
    for mount in container["volumeMounts"]:
        assert mount in gateway["volumeMounts"]
    gateway_volumes = {v["name"]: v for v in gateway_pod["volumes"]}
    for volume in lane.pod_spec(worker)["volumes"]:
        assert volume == gateway_volumes[volume["name"]]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/etc/gateway/models.yaml",
        "/etc/gateway/redis",
        "/tmp",
    }
    assert lane.pod_spec(worker)["securityContext"]["runAsUser"] == 10001


def test_worker_settings_are_passed_as_gateway_stream_env(lane) -> None:
    container = _worker_container(lane)
    expected = {
        "GATEWAY_STREAM__STREAM": "gw:s:events",
        "GATEWAY_STREAM__GROUP": "scorers",
        "GATEWAY_STREAM__OUTPUT_STREAM": "gw:s:predictions",
        "GATEWAY_STREAM__DEAD_LETTER_STREAM": "gw:s:dead",
        "GATEWAY_STREAM__BATCH_MAX_SIZE": "256",
        "GATEWAY_STREAM__BATCH_MAX_WAIT_MS": "5",
        "GATEWAY_STREAM__MAX_IN_FLIGHT": "1024",
        "GATEWAY_STREAM__METRICS_PORT": "9102",
    }
    for name, value in expected.items():
        assert _value(container, name) == value, name
    # Each pod is its own consumer in the group.
    consumer = _env(container)["GATEWAY_STREAM__CONSUMER"]
    assert consumer["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The drain after SIGTERM ends well inside the grace period.
    grace = lane.pod_spec(lane.one("Deployment", "-stream-worker"))["terminationGracePeriodSeconds"]
    assert float(_value(container, "GATEWAY_STREAM__DRAIN_TIMEOUT_S")) <= grace - 5
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9102}


def test_keda_owns_the_worker_replicas_and_scales_on_lag_down_to_zero(lane) -> None:
    deployment = lane.one("Deployment", "-stream-worker")
    assert "replicas" not in deployment["spec"], "KEDA owns replicas"
    scaled = lane.one("ScaledObject", "-stream-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == 20
    assert spec["fallback"]["replicas"] >= 1
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert set(triggers) == {"consumer-lag", "pending-entries"}
    container = _worker_container(lane)
    for trigger in triggers.values():
        assert trigger["type"] == "redis-streams"
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata is strings"
        # The same stream and group the workers consume.
        assert metadata["stream"] == _value(container, "GATEWAY_STREAM__STREAM")
        assert metadata["consumerGroup"] == _value(container, "GATEWAY_STREAM__GROUP")
        assert metadata["address"] == "rel-inference-gateway-redis:6379"
        assert metadata["databaseIndex"] == "0"
        assert metadata["enableTLS"] == "false"
    lag = triggers["consumer-lag"]["metadata"]
    assert lag["lagCount"] == "5000"
    assert lag["activationLagCount"] == "0"
    assert "pendingEntriesCount" not in lag  # lagCount alone selects the lag (scale-to-zero) mode
    assert int(triggers["pending-entries"]["metadata"]["pendingEntriesCount"]) >= 1
    # The address resolves to the in-chart Redis Service and its port.
    service = lane.one("Service", "-redis")
    assert 6379 in {p["port"] for p in service["spec"]["ports"]}


def test_keda_authenticates_with_the_workers_redis_password_secret(lane) -> None:
    auth = lane.one("TriggerAuthentication", "-stream-worker-redis")
    (ref,) = auth["spec"]["secretTargetRef"]
    volumes = {
        v["name"]: v for v in lane.pod_spec(lane.one("Deployment", "-stream-worker"))["volumes"]
    }
    secret = volumes["redis-password"]["secret"]
    assert ref == {
        "parameter": "password",
        "name": secret["secretName"],
        "key": secret["items"][0]["key"],
    }
    for trigger in lane.one("ScaledObject", "-stream-worker")["spec"]["triggers"]:
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}


def test_external_redis_address_database_and_tls_come_from_its_url(render) -> None:
    rendered = render(
        [CI / "external-redis-values.yaml", STREAM_VALUES],
    )
    for trigger in rendered.one("ScaledObject", "-stream-worker")["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert metadata["address"] == "redis.prod.example.com:6380"
        assert metadata["databaseIndex"] == "2"
        assert metadata["enableTLS"] == "true"
    (ref,) = rendered.one("TriggerAuthentication", "-stream-worker-redis")["spec"][
        "secretTargetRef"
    ]
    assert (ref["name"], ref["key"]) == ("prod-redis-credentials", "redis-password")


def test_workers_may_reach_triton_and_redis_and_keda_may_read_the_lag(lane) -> None:
    labels = lane.pod_labels(lane.one("Deployment", "-stream-worker"))
    for suffix, port in (("-triton", 8001), ("-redis", 6379)):
        policy = lane.one("NetworkPolicy", suffix)
        rules = [r for r in policy["spec"]["ingress"] if port in {p["port"] for p in r["ports"]}]
        selectors = [
            peer["podSelector"]["matchLabels"]
            for rule in rules
            for peer in rule["from"]
            if "podSelector" in peer
        ]
        assert any(lane.selects(s, labels) for s in selectors), suffix
    redis_rules = lane.one("NetworkPolicy", "-redis")["spec"]["ingress"]
    keda = [
        peer
        for rule in redis_rules
        for peer in rule["from"]
        if "namespaceSelector" in peer and 6379 in {p["port"] for p in rule["ports"]}
    ]
    assert keda == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]


def test_without_the_keda_crd_one_worker_runs_and_nothing_keda_renders(render) -> None:
    rendered = render([STREAM_VALUES], crds=False)
    assert rendered.find("Deployment", "-stream-worker") is not None
    assert not rendered.of_kind("ScaledObject")
    assert not rendered.of_kind("TriggerAuthentication")
    assert not rendered.of_kind("PodMonitor")
    for rule in rendered.one("NetworkPolicy", "-redis")["spec"]["ingress"]:
        assert all("namespaceSelector" not in peer for peer in rule["from"])


def test_without_autoscaling_the_replica_count_is_fixed(render) -> None:
    rendered = render(
        [STREAM_VALUES],
        ["streamWorker.autoscaling.enabled=false", "streamWorker.replicaCount=3"],
    )
    assert rendered.one("Deployment", "-stream-worker")["spec"]["replicas"] == 3
    assert rendered.find("ScaledObject", "-stream-worker") is None


def test_pod_monitor_scrapes_the_workers_metrics_port(lane) -> None:
    monitor = lane.one("PodMonitor", "-stream-worker")
    labels = lane.pod_labels(lane.one("Deployment", "-stream-worker"))
    assert lane.selects(monitor["spec"]["selector"]["matchLabels"], labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        (
            ["streamWorker.maxInFlight=64", "streamWorker.batchMaxSize=256"],
            "streamWorker.maxInFlight must be >= streamWorker.batchMaxSize",
        ),
        (
            ["streamWorker.autoscaling.minReplicas=5", "streamWorker.autoscaling.maxReplicas=2"],
            "streamWorker.autoscaling.minReplicas must not exceed maxReplicas",
        ),
        (
            ["streamWorker.autoscaling.pendingPerReplica=100"],
            "streamWorker.autoscaling.pendingPerReplica must be >= streamWorker.maxInFlight",
        ),
        (["streamWorker.batchSize=64"], "additional properties 'batchSize' not allowed"),
        (["streamWorker.autoscaling.minReplicas=-1"], "/streamWorker/autoscaling/minReplicas"),
        (
            ["streamWorker.terminationGracePeriodSeconds=5"],
            "/streamWorker/terminationGracePeriodSeconds",
        ),
    ],
)
def test_values_that_cannot_work_fail_with_a_readable_message(
    render, set_values: list[str], message: str
) -> None:
    with pytest.raises(AssertionError) as failure:
        render([STREAM_VALUES], set_values)
    assert message in str(failure.value)


def test_notes_say_where_events_go_and_warn_without_keda(helm) -> None:
    out = helm(
        "install", "rel", str(CHART_DIR), "--namespace", "scoring", "--dry-run=client",
        "--values", str(STREAM_VALUES),
    )  # fmt: skip
    notes = out.partition("NOTES:")[2]
    assert 'Stream workers read "gw:s:events" (group "scorers")' in notes
    assert "streamWorker.autoscaling.enabled is true but this cluster does not serve" in notes
