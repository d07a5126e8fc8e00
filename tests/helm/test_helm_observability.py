"""Observability in the chart: shipped alert rules, Grafana dashboard, tracing settings, scraping.

The rule file and the dashboard live in the chart (``rules/``, ``dashboards/``) and are
rendered from there verbatim: one source for Helm and for a plain Prometheus/Grafana. That
every metric they use is exported is checked against a live gateway in
tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "inference-gateway"
RULES = yaml.safe_load((CHART_DIR / "rules" / "gateway-alerts.yaml").read_text())
DASHBOARD_FILE = CHART_DIR / "dashboards" / "inference-gateway.json"
REQUIRED_ALERTS = {
    "GatewayLatencyP99AboveSLO",
    "GatewayCacheHitRatioDrop",
    "GatewayErrorRatioHigh",
    "TritonQueueTimeHigh",
    "GatewayShedding",
    "GatewayStreamLagHigh",
    "GatewayStreamDeadLetters",
    "GatewayStreamEventsLost",
}


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _container(rendered, suffix: str, name: str) -> dict:
    deployment = rendered.one("Deployment", suffix)
    (container,) = [c for c in rendered.containers(deployment) if c["name"] == name]
    return container


def test_rule_file_is_valid_promql_with_the_required_alerts() -> None:
    rules = [r for g in RULES["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules if "alert" in r} >= REQUIRED_ALERTS
    for rule in rules:
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
        else:
            assert rule["labels"]["severity"] in {"page", "warning"}
            assert re.fullmatch(r"\d+m", rule["for"])
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_prometheus_rule_renders_the_shipped_rule_file_verbatim(defaults) -> None:
    groups = defaults.one("PrometheusRule", "rel-inference-gateway")["spec"]["groups"]
    names = [g["name"] for g in groups]
    assert names[0] == "rel-inference-gateway.triton-queue-time"
    shipped = [g for g in groups if g["name"] in {s["name"] for s in RULES["groups"]}]
    assert shipped == RULES["groups"]


def test_alert_rules_can_be_left_out(render) -> None:
    rendered = render(set_values=["metrics.prometheusRule.alerts=false"])
    groups = rendered.one("PrometheusRule", "rel-inference-gateway")["spec"]["groups"]
    assert [g["name"] for g in groups] == ["rel-inference-gateway.triton-queue-time"]


def test_dashboard_configmap_carries_the_shipped_dashboard_for_the_sidecar(render) -> None:
    rendered = render(
        set_values=[
            "metrics.grafanaDashboards.enabled=true",
            "metrics.grafanaDashboards.annotations.grafana_folder=Inference",
        ]
    )
    config_map = rendered.one("ConfigMap", "-dashboard-inference-gateway")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Inference"}
    dashboard = json.loads(config_map["data"]["inference-gateway.json"])
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_is_off_by_default(defaults) -> None:
    assert not [c for c in defaults.of_kind("ConfigMap") if "-dashboard-" in c["metadata"]["name"]]


def test_dashboard_queries_parse_and_cover_the_gateway_and_triton() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == "inference-gateway"
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names: set[str] = set()
    for expression in expressions:
        concrete = re.sub(r"\$\{?\w+\}?", "x", expression.replace("$__rate_interval", "5m"))

        def visit(node: object) -> None:
            if isinstance(node, promql_parser.VectorSelector) and node.name:
                names.add(node.name)

        promql_parser.walk(promql_parser.parse(concrete), pre_visit=visit)
    assert {n for n in names if n.startswith("nv_")} >= {
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
    }
    assert len({n for n in names if n.startswith("gateway_")}) >= 9
    assert {n for n in names if n.startswith("gateway_stream_")} >= {
        "gateway_stream_events_total",
        "gateway_stream_consumer_lag",
        "gateway_stream_dead_letters_total",
        "gateway_stream_batch_size_bucket",
        "gateway_stream_event_to_prediction_seconds_bucket",
    }
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_gateway_metrics_are_scraped_from_the_rest_port(defaults) -> None:
    monitor = defaults.one("ServiceMonitor", "-gateway")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    container = _container(defaults, "-gateway", "gateway")
    port = {p["name"]: p["containerPort"] for p in container["ports"]}[endpoint["port"]]
    assert _env(container)["GATEWAY_HTTP_PORT"] == str(port)


def test_tracing_is_off_by_default_and_configured_the_standard_way(render, defaults) -> None:
    env = _env(_container(defaults, "-gateway", "gateway"))
    assert not [k for k in env if k.startswith("OTEL_")]
    assert env["GATEWAY_SLOW_REQUEST_S"] == "0.5"
    assert not [a for a in _container(defaults, "-triton", "triton")["args"] if "trace" in a]

    rendered = render(
        set_values=[
            "gateway.tracing.otlpEndpoint=http://otel-collector.monitoring:4318",
            "triton.tracing.otlpUrl=http://otel-collector.monitoring:4318/v1/traces",
        ]
    )
    env = _env(_container(rendered, "-gateway", "gateway"))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.05"
    assert env["OTEL_SERVICE_NAME"] == "inference-gateway"
    args = _container(rendered, "-triton", "triton")["args"]
    assert [a for a in args if a.startswith("--trace-config")] == [
        "--trace-config=mode=opentelemetry",
        "--trace-config=opentelemetry,url=http://otel-collector.monitoring:4318/v1/traces",
        "--trace-config=opentelemetry,resource=service.name=triton-inference-server",
        "--trace-config=rate=0",
        "--trace-config=count=-1",
        "--trace-config=level=TIMESTAMPS",
    ]


@pytest.mark.parametrize(
    "set_value",
    [
        "gateway.tracing.sampler=sometimes",
        "gateway.tracing.samplerArg=5%",
        "gateway.tracing.otlpEndpoint=otel-collector:4318",
        "triton.tracing.otlpUrl=otel-collector:4318",
        "metrics.prometheusRule.alerts=maybe",
    ],
)
def test_schema_rejects_bad_observability_values(render, set_value: str) -> None:
    with pytest.raises(AssertionError, match="values don't meet the specifications"):  # HelmFailed
        render(set_values=[set_value])
