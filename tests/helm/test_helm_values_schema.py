"""values.schema.json rejects misspelt keys and wrong types with a readable message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "inference-gateway"
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
# Objects whose keys are free-form by nature: label/annotation/selector maps, resource
# quantities, Kubernetes objects passed through verbatim (validated after rendering by
# kubernetes-validate), and the model spec's models (the gateway validates the spec in full).
FREE_FORM_NAMES = {
    "commonLabels",
    "labels",
    "annotations",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
    "requests",
    "limits",
    "affinity",
}
FREE_FORM_SUFFIXES = (
    ".tolerations.items",
    ".extraEnv.items",
    ".metricsFrom.items",
    ".additionalGroups.items",
)
MODEL_SPEC_MODELS = "$.properties.modelSpec.properties.models"


def _objects(node: object, path: str = "$"):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _objects(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _objects(child, f"{path}[{i}]")


def test_schema_closes_every_structured_object() -> None:
    open_objects = [
        path
        for path, node in _objects(SCHEMA)
        if node.get("additionalProperties") is not False
        and path.split(".")[-1] not in FREE_FORM_NAMES
        and not path.endswith(FREE_FORM_SUFFIXES)
        and not path.startswith(MODEL_SPEC_MODELS)
    ]
    assert not open_objects, f"objects accepting unknown keys: {open_objects}"
    assert len(list(_objects(SCHEMA))) > 50, "the walk found too few objects"


def test_schema_covers_every_default_value() -> None:
    """A key added to values.yaml but not to the schema would be rejected by helm itself."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(SCHEMA["properties"])


@pytest.mark.parametrize(
    ("set_value", "message"),
    [
        ("gateway.replicas=3", "at '/gateway': additional properties 'replicas' not allowed"),
        (
            "triton.autoscaling.keda.enable=true",
            "at '/triton/autoscaling/keda': additional properties 'enable' not allowed",
        ),
        ("redis.password=hunter2", "at '/redis': additional properties 'password' not allowed"),
        (
            "redis.external.password=hunter2",
            "at '/redis/external': additional properties 'password' not allowed",
        ),
    ],
)
def test_misspelt_or_unsupported_key_is_rejected(render, set_value: str, message: str) -> None:
    with pytest.raises(AssertionError) as failure:
        render(set_values=[set_value])
    assert "values don't meet the specifications of the schema" in str(failure.value)
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("set_value", "message"),
    [
        ("gateway.workers=two", "at '/gateway/workers': got string, want integer"),
        ("triton.autoscaling.minReplicas=0", "at '/triton/autoscaling/minReplicas'"),
        ("redis.mode=sentinel", "at '/redis/mode'"),
        ("redis.external.url=redis://user:secret@redis:6379", "at '/redis/external/url'"),
    ],
)
def test_wrong_type_or_value_is_rejected(render, set_value: str, message: str) -> None:
    with pytest.raises(AssertionError) as failure:
        render(set_values=[set_value])
    assert message in str(failure.value)


def test_bad_values_file_is_rejected_by_lint_and_template(helm, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(
        yaml.safe_dump({"gateway": {"autoscalling": {"enabled": True}, "httpPort": "8080"}})
    )
    with pytest.raises(AssertionError) as template_failure:
        helm("template", "r", str(CHART_DIR), "--values", str(bad))
    text = str(template_failure.value)
    assert "additional properties 'autoscalling' not allowed" in text
    assert "at '/gateway/httpPort': got string, want integer" in text
    with pytest.raises(AssertionError, match="autoscalling"):
        helm("lint", str(CHART_DIR), "--values", str(bad))


def test_chart_model_spec_default_equals_config_models_yaml() -> None:
    """Drift check: the chart ships a copy of config/models.yaml as modelSpec."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    canonical = yaml.safe_load((REPO_ROOT / "config" / "models.yaml").read_text())
    assert values["modelSpec"] == canonical, (
        "helm/inference-gateway/values.yaml modelSpec differs from config/models.yaml; "
        "copy the file under `modelSpec:`"
    )


def test_rendered_model_spec_configmap_equals_config_models_yaml(defaults) -> None:
    configmap = defaults.one("ConfigMap", "-model-spec")
    canonical = yaml.safe_load((REPO_ROOT / "config" / "models.yaml").read_text())
    assert yaml.safe_load(configmap["data"]["models.yaml"]) == canonical


def test_secret_looking_extra_env_must_come_from_a_secret(render) -> None:
    plain = ["gateway.extraEnv[0].name=API_TOKEN", "gateway.extraEnv[0].value=abc"]
    with pytest.raises(AssertionError, match="at '/gateway/extraEnv/0': missing property"):
        render(set_values=plain)
    from_secret = [
        "gateway.extraEnv[0].name=API_TOKEN",
        "gateway.extraEnv[0].valueFrom.secretKeyRef.name=api",
        "gateway.extraEnv[0].valueFrom.secretKeyRef.key=token",
    ]
    rendered = render(set_values=from_secret)
    env = rendered.pod_spec(rendered.one("Deployment", "-gateway"))["containers"][0]["env"]
    assert env[-1]["valueFrom"]["secretKeyRef"] == {"name": "api", "key": "token"}
