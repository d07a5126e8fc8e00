"""Assertions on the rendered objects, one group per requirement of the chart."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "inference-gateway"
CI = CHART_DIR / "ci"
CI_VALUES = sorted(CI.glob("*-values.yaml"))
GPU = "nvidia.com/gpu"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _mounts(container: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


# --- Deployments, Services, model spec ------------------------------------------------------


def test_gateway_deployment_follows_the_gateway_contract(defaults) -> None:
    deployment = defaults.one("Deployment", "-gateway")
    pod = defaults.pod_spec(deployment)
    (gateway,) = pod["containers"]
    env = _env(gateway)
    assert gateway["args"] == ["serve"]
    assert env["GATEWAY_SPEC_PATH"] == "/etc/gateway/models.yaml"
    assert env["GATEWAY_HTTP_PORT"] == "8080"
    assert env["GATEWAY_GRPC_PORT"] == "50051"
    assert int(env["GATEWAY_WORKERS"]) >= 1
    assert env["GATEWAY_REDIS__URL"] == "redis://rel-inference-gateway-redis:6379/0"
    assert env["GATEWAY_TRITON__URL"] == "rel-inference-gateway-triton:8001"
    assert env["GATEWAY_REDIS__PASSWORD_FILE"] == "/etc/gateway/redis/password"
    mounts = _mounts(gateway)
    assert mounts["/etc/gateway/models.yaml"]["subPath"] == "models.yaml"
    assert mounts["/etc/gateway/redis"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_volume = volumes[mounts["/etc/gateway/redis"]["name"]]["secret"]
    assert secret_volume["items"] == [{"key": "password", "path": "password"}]
    spec_volume = volumes[mounts["/etc/gateway/models.yaml"]["name"]]["configMap"]
    assert spec_volume["name"] == defaults.one("ConfigMap", "-model-spec")["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": 8080, "grpc": 50051}


def test_gateway_service_exposes_http_and_grpc(defaults) -> None:
    service = defaults.one("Service", "-gateway")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8080, "grpc": 50051}
    deployment = defaults.one("Deployment", "-gateway")
    assert defaults.selects(service["spec"]["selector"], defaults.pod_labels(deployment))


def test_triton_runs_the_stock_ngc_image_with_strict_readiness(defaults) -> None:
    deployment = defaults.one("Deployment", "-triton")
    triton = defaults.pod_spec(deployment)["containers"][0]
    assert triton["image"] == TRITON_IMAGE
    for flag in (
        "--model-repository=/models",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--model-control-mode=none",
    ):
        assert flag in triton["args"]
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    service = defaults.one("Service", "-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert defaults.selects(service["spec"]["selector"], defaults.pod_labels(deployment))


def test_triton_requests_gpus_by_default_and_tolerates_gpu_nodes(defaults) -> None:
    pod = defaults.pod_spec(defaults.one("Deployment", "-triton"))
    resources = pod["containers"][0]["resources"]
    assert int(resources["limits"][GPU]) >= 1
    assert resources["requests"][GPU] == resources["limits"][GPU]
    assert any(t["key"] == GPU for t in pod["tolerations"])


def test_gpu_count_is_one_value(render) -> None:
    rendered = render(set_values=["triton.gpus=2"])
    resources = rendered.pod_spec(rendered.one("Deployment", "-triton"))["containers"][0][
        "resources"
    ]
    assert resources["requests"][GPU] == resources["limits"][GPU] == 2


def test_triton_scheduling_is_settable(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    pod = rendered.pod_spec(rendered.one("Deployment", "-triton"))
    assert pod["nodeSelector"] == {"node-pool": "gpu-l4"}


def test_cpu_dev_values_request_no_gpu(render) -> None:
    rendered = render([CI / "cpu-dev-values.yaml"])
    assert GPU not in json.dumps(rendered.objects)
    pod = rendered.pod_spec(rendered.one("Deployment", "-triton"))
    assert "tolerations" not in pod


def test_model_repository_from_object_storage_syncs_in_an_init_container(defaults) -> None:
    pod = defaults.pod_spec(defaults.one("Deployment", "-triton"))
    (sync,) = pod["initContainers"]
    assert sync["args"][:3] == ["copy", ":s3:models/model_repository", "/models"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"]
    assert _mounts(sync)["/models"]["name"] == "models"


def test_model_repository_from_a_pvc_is_mounted_read_only(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    pod = rendered.pod_spec(rendered.one("Deployment", "-triton"))
    assert "initContainers" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": "triton-model-repository",
        "readOnly": True,
    }
    mount = _mounts(pod["containers"][0])["/models"]
    assert mount["readOnly"] is True
    assert mount["subPath"] == "model_repository"


# --- No cold starts -----------------------------------------------------------------------------


def test_triton_takes_traffic_only_when_models_are_ready(defaults) -> None:
    triton = defaults.pod_spec(defaults.one("Deployment", "-triton"))["containers"][0]
    for probe in ("startupProbe", "readinessProbe"):
        assert triton[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "too short to load"


def test_gateway_readiness_is_readyz_and_liveness_is_healthz(defaults) -> None:
    gateway = defaults.pod_spec(defaults.one("Deployment", "-gateway"))["containers"][0]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("component", ["-gateway", "-triton"])
def test_rolling_updates_drain_before_termination(defaults, component: str) -> None:
    deployment = defaults.one("Deployment", component)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = defaults.pod_spec(deployment)
    container = pod["containers"][0]
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(sleep[1]) + 10


@pytest.mark.parametrize("component", ["-gateway", "-triton"])
def test_at_least_two_replicas_by_default(defaults, component: str) -> None:
    deployment = defaults.one("Deployment", component)
    assert "replicas" not in deployment["spec"], "the HPA owns replicas"
    hpa = defaults.one("HorizontalPodAutoscaler", component)
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


@pytest.mark.parametrize("component", ["-gateway", "-triton"])
def test_pod_disruption_budget_covers_each_serving_workload(defaults, component: str) -> None:
    pdb = defaults.one("PodDisruptionBudget", component)
    labels = defaults.pod_labels(defaults.one("Deployment", component))
    assert defaults.selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("component", ["-gateway", "-triton"])
def test_replicas_spread_across_nodes_and_zones(defaults, component: str) -> None:
    deployment = defaults.one("Deployment", component)
    constraints = defaults.pod_spec(deployment)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    labels = defaults.pod_labels(deployment)
    for constraint in constraints:
        assert defaults.selects(constraint["labelSelector"]["matchLabels"], labels)
        assert constraint["maxSkew"] == 1


# --- Autoscaling --------------------------------------------------------------------------------


def test_gateway_hpa_scales_on_cpu_with_scale_down_stabilization(defaults) -> None:
    hpa = defaults.one("HorizontalPodAutoscaler", "-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (cpu,) = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_gateway_hpa_can_scale_on_request_rate(render) -> None:
    rendered = render([CI / "keda-values.yaml"])
    hpa = rendered.one("HorizontalPodAutoscaler", "-gateway")
    kinds = [m["type"] for m in hpa["spec"]["metrics"]]
    assert kinds == ["Resource", "Pods"]


def test_triton_hpa_scales_on_queue_time_per_model(defaults) -> None:
    hpa = defaults.one("HorizontalPodAutoscaler", "-triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = hpa["spec"]["metrics"]
    assert [m["external"]["metric"]["selector"]["matchLabels"]["model"] for m in metrics] == [
        "fraud_scorer"
    ]
    for metric in metrics:
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "triton_queue_time_us_per_request"
        assert metric["external"]["target"]["type"] == "Value"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_keda_values_render_no_hpa_for_triton(render) -> None:
    rendered = render([CI / "keda-values.yaml"])
    triton = rendered.one("Deployment", "-triton")["metadata"]["name"]
    targets = [
        h["spec"]["scaleTargetRef"]["name"] for h in rendered.of_kind("HorizontalPodAutoscaler")
    ]
    assert triton not in targets
    (scaled,) = rendered.of_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == triton


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_no_workload_has_both_an_hpa_and_a_scaled_object(render, values: Path) -> None:
    rendered = render([values])
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    keda_targets = {s["spec"]["scaleTargetRef"]["name"] for s in rendered.of_kind("ScaledObject")}
    assert not hpa_targets & keda_targets


def test_hpa_and_keda_on_the_same_workload_fail_with_a_readable_message(render) -> None:
    with pytest.raises(AssertionError) as failure:
        render(set_values=["triton.autoscaling.keda.enabled=true"])
    text = str(failure.value)
    assert "triton.autoscaling: hpa.enabled and keda.enabled are both true" in text
    assert "enable exactly one of them" in text


def test_autoscaling_without_a_mechanism_fails(render) -> None:
    with pytest.raises(AssertionError, match=re.escape("neither hpa.enabled nor keda.enabled")):
        render(set_values=["triton.autoscaling.hpa.enabled=false"])


# --- Batch scoring ------------------------------------------------------------------------------


def test_batch_scoring_is_an_indexed_job_with_one_pod_per_shard(render) -> None:
    rendered = render([CI / "external-redis-values.yaml"])
    cronjob = rendered.one("CronJob", "-batch")
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == 8
    assert job["parallelism"] == 4
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = rendered.pod_spec(cronjob)["containers"]
    assert container["args"] == [
        "batch-score",
        "--model",
        "fraud_scorer",
        "--source",
        "feature-store",
        "--shard",
        "$(JOB_COMPLETION_INDEX)/8",
    ]
    gateway = rendered.pod_spec(rendered.one("Deployment", "-gateway"))["containers"][0]
    assert container["image"] == gateway["image"]
    for name in ("GATEWAY_REDIS__URL", "GATEWAY_REDIS__PASSWORD_FILE", "GATEWAY_TRITON__URL"):
        assert _env(container)[name] == _env(gateway)[name]


def test_batch_is_off_by_default(defaults) -> None:
    assert not defaults.of_kind("CronJob")


# --- Security -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_container_is_hardened(render, values: Path) -> None:
    rendered = render([values])
    assert rendered.workloads()
    for workload in rendered.workloads():
        pod = rendered.pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in rendered.containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert ":latest" not in container["image"], where


@pytest.mark.parametrize("component", ["-gateway", "-triton"])
def test_writable_tmp_is_an_empty_dir(defaults, component: str) -> None:
    deployment = defaults.one("Deployment", component)
    pod = defaults.pod_spec(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = _mounts(pod["containers"][0])["/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def _selected_pods(rendered, selector: dict[str, str]) -> set[str]:
    return {
        w["metadata"]["name"]
        for w in rendered.workloads()
        if rendered.selects(selector, rendered.pod_labels(w))
    }


def _allowed_clients(rendered, policy: dict, port: int) -> set[str]:
    allowed: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        assert "from" in rule, f"port {port} is open to every pod"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "clients must be selected by pod labels"
            allowed |= _selected_pods(rendered, peer["podSelector"]["matchLabels"])
    return allowed


def test_only_gateway_and_batch_pods_reach_triton_and_redis(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    gateway, batch = "rel-inference-gateway-gateway", "rel-inference-gateway-batch"
    for suffix, ports in (("-triton", (8000, 8001)), ("-redis", (6379,))):
        policy = rendered.one("NetworkPolicy", suffix)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        target = rendered.one("Deployment", suffix)["metadata"]["name"]
        assert _selected_pods(rendered, policy["spec"]["podSelector"]["matchLabels"]) == {target}
        for port in ports:
            assert _allowed_clients(rendered, policy, port) == {gateway, batch}, (suffix, port)


def test_triton_metrics_port_is_limited_to_the_configured_scrapers(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    policy = rendered.one("NetworkPolicy", "-triton")
    (metrics_rule,) = [
        r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 8002, "protocol": "TCP"}]
    ]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_external_redis_has_no_in_chart_redis(render) -> None:
    rendered = render([CI / "external-redis-values.yaml"])
    assert rendered.find("Deployment", "-redis") is None
    assert rendered.find("NetworkPolicy", "-redis") is None
    assert not rendered.of_kind("Secret")
    gateway = rendered.pod_spec(rendered.one("Deployment", "-gateway"))
    assert _env(gateway["containers"][0])["GATEWAY_REDIS__URL"] == (
        "rediss://redis.prod.example.com:6380/2"
    )
    volumes = {v["name"]: v for v in gateway["volumes"]}
    assert volumes["redis-password"]["secret"]["secretName"] == "prod-redis-credentials"
    assert volumes["redis-password"]["secret"]["items"] == [
        {"key": "redis-password", "path": "password"}
    ]


def test_external_redis_requires_an_existing_secret(render) -> None:
    message = re.escape("redis.external.existingSecret is required")
    with pytest.raises(AssertionError, match=message):
        render([CI / "external-redis-values.yaml"], ["redis.external.existingSecret="])


def test_generated_redis_password_appears_only_in_its_secret(defaults) -> None:
    (secret,) = defaults.of_kind("Secret")
    encoded = secret["data"]["password"]
    password = base64.b64decode(encoded).decode()
    assert len(password) >= 32
    for obj in defaults.objects:
        if obj is secret:
            continue
        text = json.dumps(obj)
        assert password not in text, f"password leaked into {obj['kind']}/{obj['metadata']['name']}"
        assert encoded not in text, f"password leaked into {obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_no_secret_material_in_env_values_or_configmaps(render, values: Path) -> None:
    rendered = render([values])
    for workload in rendered.workloads():
        for container in rendered.containers(workload):
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "SECRET", "TOKEN")):
                    assert env["name"].endswith("_FILE") or "valueFrom" in env, env
            assert "requirepass" not in json.dumps(container.get("args", [])).replace(
                'requirepass \\"%s\\"', ""
            )
    for configmap in rendered.of_kind("ConfigMap"):
        for line in "\n".join(configmap["data"].values()).splitlines():
            assert not line.strip().startswith("requirepass"), configmap["metadata"]["name"]
    for obj in rendered.objects:
        if obj["kind"] == "Deployment":
            url = next(
                (
                    e["value"]
                    for c in rendered.containers(obj)
                    for e in c.get("env", [])
                    if e["name"] == "GATEWAY_REDIS__URL"
                ),
                None,
            )
            assert url is None or "@" not in url


def test_in_chart_redis_is_redis_7_0_non_root_with_password_from_a_file(defaults) -> None:
    redis = defaults.one("Deployment", "-redis")
    pod = defaults.pod_spec(redis)
    (container,) = pod["containers"]
    assert container["image"].startswith("redis:7.0")
    assert pod["securityContext"]["runAsUser"] == 999
    assert "/etc/redis/secret/password" in container["args"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["password"]["secret"]["secretName"] == "rel-inference-gateway-redis-auth"
    assert volumes["auth"]["emptyDir"]["medium"] == "Memory"
    config = defaults.one("ConfigMap", "-redis-config")["data"]["redis.conf"]
    assert "include /run/redis/auth.conf" in config


def test_in_chart_redis_can_use_an_existing_secret(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    assert not rendered.of_kind("Secret")
    for name in ("-redis", "-gateway"):
        pod = rendered.pod_spec(rendered.one("Deployment", name))
        secrets = [
            v["secret"]["secretName"]
            for v in pod["volumes"]
            if "secret" in v and v["name"] != "api-keys"  # the gateway's keys: test_helm_access
        ]
        assert secrets == ["gateway-redis"]


def test_ingress_terminates_tls_for_the_gateway_http_port(render) -> None:
    rendered = render([CI / "production-ingress-values.yaml"])
    ingress = rendered.one("Ingress", "-gateway")
    assert ingress["spec"]["tls"] == [
        {"secretName": "scoring-example-com-tls", "hosts": ["scoring.example.com"]}
    ]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = rendered.one("Service", "-gateway")
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_ingress_is_off_by_default(defaults) -> None:
    assert not defaults.of_kind("Ingress")


# --- NOTES.txt ----------------------------------------------------------------------------------


def _notes(helm, *args: str) -> str:
    out = helm(
        "install", "rel", str(CHART_DIR), "--namespace", "scoring", "--dry-run=client", *args
    )
    return out.partition("NOTES:")[2]


def test_notes_tell_the_operator_how_to_call_the_service(helm) -> None:
    notes = _notes(helm)
    assert "http://rel-inference-gateway-gateway.scoring.svc:8080/v1/models/" in notes
    assert "rel-inference-gateway-gateway.scoring.svc:50051" in notes
    assert "port-forward svc/rel-inference-gateway-gateway 8080:http 50051:grpc" in notes
    assert "/v1/models/fraud_scorer/predict" in notes
    assert "rollout status deploy/rel-inference-gateway-triton" in notes


def test_notes_warn_when_keda_is_enabled_without_its_crd(helm) -> None:
    notes = _notes(helm, "--values", str(CI / "keda-values.yaml"))
    assert "does not serve keda.sh/v1alpha1" in notes
