"""ServiceMonitor, PrometheusRule and KEDA ScaledObject: structural checks.

No CRD schemas are available offline, so the fields each operator requires are asserted here,
and every reference (selectors, ports, scale targets) is resolved against the rendered objects.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CI = REPO_ROOT / "helm" / "inference-gateway" / "ci"
MODELS = sorted(
    m["triton"]["name"]
    for m in yaml.safe_load((REPO_ROOT / "config" / "models.yaml").read_text())["models"].values()
)
SELECTOR = (
    r'\{namespace="scoring",service="rel-inference-gateway-triton"(,model="(?P<model>\w+)")?\}'
)
RATIO_OF_RATES = re.compile(
    r"sum by \((?P<by>[\w, ]+)\) \(rate\(nv_inference_queue_duration_us" + SELECTOR + r"\[1m\]\)\)"
    r" / \(sum by \((?P=by)\) \(rate\(nv_inference_request_success"
    + SELECTOR.replace("?P<model>", "")
    + r"\[1m\]\)\) > 0\)"
)


@pytest.fixture(scope="module")
def keda(render):
    return render([CI / "keda-values.yaml"])


@pytest.mark.parametrize("values", ["defaults-values.yaml", "keda-values.yaml"])
def test_service_monitors_select_the_services_and_their_metrics_ports(render, values: str) -> None:
    rendered = render([CI / values])
    monitors = rendered.of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        "rel-inference-gateway-gateway",
        "rel-inference-gateway-triton",
    }
    services = rendered.of_kind("Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": ["scoring"]}
        matched = [
            s
            for s in services
            if rendered.selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"{monitor['metadata']['name']} selects {len(matched)} Services"
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert spec["endpoints"], "no endpoints"
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", endpoint["interval"])
    triton_monitor = rendered.one("ServiceMonitor", "-triton")
    assert triton_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_service_monitor_labels_let_the_prometheus_select_it(keda) -> None:
    for monitor in keda.of_kind("ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_scaled_object_targets_triton_with_a_queue_time_trigger_per_model(keda) -> None:
    scaled = keda.one("ScaledObject", "-triton")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = keda.one("Deployment", "-triton")
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": target["metadata"]["name"],
    }
    assert spec["minReplicaCount"] >= 2
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    triggers = spec["triggers"]
    seen = []
    for trigger in triggers:
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] == "Value"
        metadata = trigger["metadata"]
        assert set(metadata) >= {"serverAddress", "query", "threshold"}
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata is strings"
        assert metadata["serverAddress"].startswith("http")
        assert float(metadata["threshold"]) > 0
        match = RATIO_OF_RATES.search(metadata["query"])
        assert match, f"not a ratio of rates: {metadata['query']}"
        assert match["by"] == "model"
        seen.append(match["model"])
        assert trigger["authenticationRef"] == {"name": "prometheus-auth"}
    assert sorted(seen) == MODELS


def test_queue_time_query_is_never_the_per_pod_average(keda) -> None:
    """Triton's example (avg of per-pod ratios) under-reports and delays scale-up."""
    for trigger in keda.one("ScaledObject", "-triton")["spec"]["triggers"]:
        query = trigger["metadata"]["query"]
        assert "avg" not in query
        assert "by (pod)" not in query


def test_prometheus_rule_records_the_queue_time_ratio(defaults) -> None:
    rule = defaults.one("PrometheusRule", "rel-inference-gateway")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert all({"name", "rules"} <= set(g) for g in groups)
    (queue_time,) = [g for g in groups if g["name"] == "rel-inference-gateway.triton-queue-time"]
    (recording,) = [r for r in queue_time["rules"] if "record" in r]
    assert recording["record"] == "triton:queue_time_us_per_request:ratio_rate"
    match = RATIO_OF_RATES.search(recording["expr"])
    assert match
    assert match["by"] == "namespace, service, model"
    assert match["model"] is None


def test_prometheus_rule_accepts_additional_groups(render) -> None:
    rendered = render(
        set_values=[
            "metrics.prometheusRule.additionalGroups[0].name=gateway-alerts",
            "metrics.prometheusRule.additionalGroups[0].rules[0].alert=GatewayDown",
            "metrics.prometheusRule.additionalGroups[0].rules[0].expr=up == 0",
        ]
    )
    groups = rendered.one("PrometheusRule", "rel-inference-gateway")["spec"]["groups"]
    assert [g["name"] for g in groups][-1] == "gateway-alerts"


def test_gated_objects_can_be_switched_off(render) -> None:
    rendered = render(
        set_values=["metrics.serviceMonitor.enabled=false", "metrics.prometheusRule.enabled=false"]
    )
    assert not rendered.of_kind("ServiceMonitor")
    assert not rendered.of_kind("PrometheusRule")
