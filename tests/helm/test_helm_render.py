"""helm lint / helm template over every ci values file; every built-in object validates."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "inference-gateway"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.33.0"
# The oldest version Chart.yaml's kubeVersion admits, and the one the chart is rendered for.
SCHEMA_VERSIONS = ["1.29.0", KUBE_VERSION]
# Custom resources: checked structurally in test_helm_custom_resources.py.
CUSTOM_API_GROUPS = {"monitoring.coreos.com", "keda.sh"}
GATED_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


def _group(obj: dict) -> str:
    api_version: str = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def test_chart_admits_the_oldest_validated_kubernetes_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={SCHEMA_VERSIONS[0]}-0"


def test_ci_values_cover_the_supported_combinations() -> None:
    names = {p.name for p in CI_VALUES}
    required = {
        "defaults-values.yaml",
        "external-redis-values.yaml",
        "keda-values.yaml",
        "cpu-dev-values.yaml",
    }
    assert required <= names, f"missing ci values: {sorted(required - names)}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_passes_in_strict_mode(helm, values: Path) -> None:
    out = helm(
        "lint", str(CHART_DIR), "--strict", "--kube-version", KUBE_VERSION, "--values", str(values)
    )
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("kube_version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("crds", [True, False], ids=["with-crd-apis", "without-crd-apis"])
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_builtin_object_validates_against_kubernetes_schemas(
    render, values: Path, crds: bool, kube_version: str
) -> None:
    rendered = render([values], crds=crds)
    assert rendered.objects, "nothing rendered"
    errors = []
    for obj in rendered.objects:
        if _group(obj) in CUSTOM_API_GROUPS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(e).splitlines()[0]}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_crd_gated_objects_render_only_when_the_api_is_served(render, values: Path) -> None:
    without = {o["kind"] for o in render([values], crds=False).objects}
    assert not (without & GATED_KINDS), f"rendered without their CRDs: {without & GATED_KINDS}"
    with_crds = {o["kind"] for o in render([values], crds=True).objects}
    assert {"ServiceMonitor", "PrometheusRule"} <= with_crds


def test_strict_validation_rejects_an_unknown_field(defaults) -> None:
    """The validation above can fail: a misspelt field in a Deployment is caught."""
    deployment = defaults.one("Deployment", "-gateway")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 3}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replicaz"):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_object_carries_the_standard_labels_and_a_valid_name(render, values: Path) -> None:
    for obj in render([values]).objects:
        name = obj["metadata"]["name"]
        labels = obj["metadata"].get("labels", {})
        assert len(name) <= 63, name
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{name} lacks label {key}"
