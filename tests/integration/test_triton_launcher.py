"""The launcher against the real tritonserver from the nvidia-pytriton wheel (CPU).

A tiny ONNX model (y = sigmoid(x @ W + b)) with a *production* config (onnxruntime backend,
KIND_GPU, TensorRT, dynamic batching, warm-up) proves the whole local path: adaptation, the
python-backend ONNX adapter, batching, errors, restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from triton_launcher.distribution import TritonDistribution
from triton_launcher.errors import ModelLoadError, TritonBinaryNotFound
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

pytestmark = pytest.mark.integration

MODEL = "tiny"
WARMUP_BATCH = 8
PROJECT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"

TINY_CONFIG = f"""
name: "{MODEL}"
backend: "onnxruntime"
max_batch_size: 256
input [{{ name: "x" data_type: TYPE_FP32 dims: [4] }}]
output [{{ name: "y" data_type: TYPE_FP32 dims: [2] }}]
instance_group [{{ count: 1 kind: KIND_GPU gpus: [0] }}]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
optimization {{ execution_accelerators {{
  gpu_execution_accelerator [{{ name: "tensorrt" }}]
}} }}
model_warmup [{{
  name: "warm"
  batch_size: {WARMUP_BATCH}
  inputs {{ key: "x" value {{ data_type: TYPE_FP32 dims: [4] random_data: true }} }}
}}]
"""


def _tiny_onnx_model() -> onnx.ModelProto:
    weights = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(4, 2)
    bias = np.array([0.1, -0.2], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any recent onnxruntime
    onnx.checker.check_model(model)
    return model


def _write_model(repository: Path, name: str, config: str, onnx_bytes: bytes) -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(config)
    (repository / name / "1" / "model.onnx").write_bytes(onnx_bytes)


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("production_repository")
    _write_model(repository, MODEL, TINY_CONFIG, _tiny_onnx_model().SerializeToString())
    return repository


@pytest.fixture(scope="module")
def triton(tiny_repository: Path) -> Iterator[TritonServer]:
    with TritonServer(tiny_repository, startup_timeout_s=120) as server:
        yield server


@pytest.fixture(scope="module")
def reference_session(tiny_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(tiny_repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _infer(url: str, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput("x", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(MODEL, [tensor]).as_numpy("y")
        assert result is not None
        return np.asarray(result, dtype=np.float32)
    finally:
        client.close()


def _counts(url: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from Triton's own statistics."""
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))
    finally:
        client.close()


def test_launcher_adapts_the_production_config(triton: TritonServer) -> None:
    assert triton.repository.adapted_models == [MODEL]
    notes = " ".join(triton.repository.models[0].notes)
    assert "KIND_GPU -> KIND_CPU" in notes
    assert "tensorrt" in notes


def test_warmup_ran_at_load(triton: TritonServer) -> None:
    # Triton counts warm-up samples in the model statistics.
    inferences, executions = _counts(triton.grpc_url, MODEL)
    assert inferences >= WARMUP_BATCH
    assert executions >= 1


def test_inference_matches_onnxruntime(
    triton: TritonServer, reference_session: ort.InferenceSession
) -> None:
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    served = _infer(triton.grpc_url, rows)

    expected = reference_session.run(["y"], {"x": rows})[0]
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)


async def test_dynamic_batching_merges_concurrent_requests(
    triton: TritonServer, reference_session: ort.InferenceSession
) -> None:
    requests = 200
    rows = np.random.default_rng(1).normal(size=(requests, 1, 4)).astype(np.float32)
    inferences_before, executions_before = _counts(triton.grpc_url, MODEL)

    client = grpcclient_aio.InferenceServerClient(triton.grpc_url)
    try:

        async def one(row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            tensor = grpcclient_aio.InferInput("x", [1, 4], "FP32")
            tensor.set_data_from_numpy(row)
            result = (await client.infer(MODEL, [tensor])).as_numpy("y")
            assert result is not None
            return np.asarray(result, dtype=np.float32)

        served = await asyncio.gather(*(one(row) for row in rows))
    finally:
        await client.close()

    inferences_after, executions_after = _counts(triton.grpc_url, MODEL)
    inferences, executions = (
        inferences_after - inferences_before,
        executions_after - executions_before,
    )
    print(f"dynamic batching: {inferences} requests ran as {executions} executions")
    assert inferences == requests
    assert executions < requests
    # The adapter concatenates and splits: every request still gets *its own* row back.
    expected = reference_session.run(["y"], {"x": rows.reshape(requests, 4)})[0]
    np.testing.assert_allclose(np.concatenate(served), expected, rtol=1e-6, atol=1e-7)


def test_model_that_fails_to_load_reports_tritons_reason(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    _write_model(repository, "broken", TINY_CONFIG.replace(MODEL, "broken"), b"not an onnx file")
    server = TritonServer(repository, startup_timeout_s=60)
    try:
        with pytest.raises(ModelLoadError) as failure:
            server.start()
    finally:
        server.stop()

    assert list(failure.value.reasons) == ["broken"]
    # The adapter's message, relayed by Triton's repository index.
    assert "onnxruntime cannot load" in failure.value.reasons["broken"]
    assert "broken" in str(failure.value)


def _has_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the model would load")
def test_gpu_instances_without_a_gpu_fail_the_load_instead_of_running_on_cpu(
    tiny_repository: Path,
) -> None:
    server = TritonServer(tiny_repository, startup_timeout_s=60, gpu=True)
    try:
        with pytest.raises(ModelLoadError) as failure:
            server.start()
    finally:
        server.stop()

    # Triton's own reason: "... kind KIND_GPU but no GPUs are available", or with `gpus: [0]`
    # as here, "... specifies invalid or unsupported gpu id 0".
    assert "unsupported gpu id 0" in failure.value.reasons[MODEL]


def test_missing_binary_names_the_path_and_the_wheel(tmp_path: Path, tiny_repository: Path) -> None:
    missing = TritonDistribution.from_root(tmp_path / "nowhere" / "tritonserver")
    server = TritonServer(tiny_repository, distribution=missing)

    with pytest.raises(TritonBinaryNotFound) as failure:
        server.start()

    message = str(failure.value)
    assert str(tmp_path / "nowhere" / "tritonserver" / "bin" / "tritonserver") in message
    assert "nvidia-pytriton" in message
    server.stop()  # idempotent, nothing was started


def test_restart_comes_back_on_the_same_ports(tiny_repository: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    server = TritonServer(
        tiny_repository, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]
    )
    rows = np.ones((2, 4), dtype=np.float32)
    try:
        server.start()
        first = _infer(server.grpc_url, rows)
        server.stop()
        assert not server.is_running
        server.stop()  # idempotent

        started = time.monotonic()
        server.start()
        print(f"restart to ready: {time.monotonic() - started:.1f} s")
        assert (server.http_port, server.grpc_port, server.metrics_port) == ports
        np.testing.assert_array_equal(_infer(server.grpc_url, rows), first)
    finally:
        server.stop()


@pytest.mark.slow
async def test_stop_under_load_fails_fast_and_restart_serves_the_same_client(
    tiny_repository: Path,
) -> None:
    server = TritonServer(tiny_repository)
    client = grpcclient_aio.InferenceServerClient(server.grpc_url)
    outcomes: list[str] = []
    loading = True

    async def load() -> None:
        while loading:
            tensor = grpcclient_aio.InferInput("x", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            try:
                await client.infer(MODEL, [tensor], client_timeout=2.0)
                outcomes.append("ok")
            except InferenceServerException:
                outcomes.append("error")
                await asyncio.sleep(0.01)

    try:
        await asyncio.to_thread(server.start)
        workers = [asyncio.create_task(load()) for _ in range(16)]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        stop_s = time.monotonic() - started
        served_before = outcomes.count("ok")
        await asyncio.sleep(0.5)  # requests now fail (fast) instead of hanging
        assert outcomes.count("error") > 0

        started = time.monotonic()
        await asyncio.to_thread(server.start)
        restart_s = time.monotonic() - started
        errors_at_restart = len(outcomes) - served_before
        await asyncio.sleep(3.0)  # gRPC reconnect back-off of the long-lived client
        loading = False
        await asyncio.gather(*workers)
    finally:
        loading = False
        await client.close()
        server.stop()

    served_after = outcomes.count("ok") - served_before
    print(
        f"stop under load {stop_s:.1f} s, restart {restart_s:.1f} s, "
        f"{served_before} ok before, {errors_at_restart} fast errors, {served_after} ok after"
    )
    assert served_before > 0
    assert served_after > 0


@pytest.mark.skipif(
    not (PROJECT_REPOSITORY / "fraud_scorer" / "config.pbtxt").is_file(),
    reason="model_repository/fraud_scorer is not built yet",
)
def test_project_fraud_scorer_loads_warms_up_and_answers() -> None:
    with TritonServer(PROJECT_REPOSITORY) as server:
        _, executions = _counts(server.grpc_url, "fraud_scorer")
        assert executions >= 1, "model_warmup did not run"
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            features = np.random.default_rng(2).random((3, 14), dtype=np.float32)
            tensor = grpcclient.InferInput("features", [3, 14], "FP32")
            tensor.set_data_from_numpy(features)
            result = client.infer("fraud_scorer", [tensor]).as_numpy("fraud_probability")
        finally:
            client.close()
    assert result is not None
    assert result.shape == (3, 1)
    assert np.all((result >= 0.0) & (result <= 1.0))
