"""Adapting a production (GPU, onnxruntime) model repository to the local CPU runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from triton_launcher.errors import RepositoryError
from triton_launcher.repository import (
    ADAPTER_SOURCE,
    GRAPH_SOURCE,
    ONNX_FILENAME_PARAMETER,
    adapt_config,
    adapt_repository,
    format_config,
    parse_config,
)

PRODUCTION_ONNX_CONFIG = """
name: "scorer"
backend: "onnxruntime"
max_batch_size: 256
version_policy { latest { num_versions: 2 } }
input [{ name: "features" data_type: TYPE_FP32 dims: [14] }]
output [{ name: "probability" data_type: TYPE_FP32 dims: [1] }]
instance_group [
  { name: "gpu_group" count: 2 kind: KIND_GPU gpus: [0, 1] },
  { name: "cpu_group" count: 1 kind: KIND_CPU }
]
dynamic_batching {
  preferred_batch_size: [64, 128]
  max_queue_delay_microseconds: 2000
}
optimization {
  priority: PRIORITY_MAX
  cuda { graphs: true }
  execution_accelerators {
    gpu_execution_accelerator [
      { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }
    ]
  }
}
parameters { key: "intra_op_thread_count" value { string_value: "2" } }
model_warmup [{
  name: "warm"
  batch_size: 4
  inputs { key: "features" value { data_type: TYPE_FP32 dims: [14] zero_data: true } }
}]
response_cache { enable: true }
"""

PYTHON_CONFIG = """
name: "preprocess"
backend: "python"
max_batch_size: 8
input [{ name: "raw" data_type: TYPE_FP32 dims: [3] }]
output [{ name: "clean" data_type: TYPE_FP32 dims: [3] }]
instance_group [{ count: 1 kind: KIND_CPU }]
"""


@pytest.fixture
def production_config() -> mc.ModelConfig:
    return parse_config(PRODUCTION_ONNX_CONFIG)


def test_adapt_config_serves_onnxruntime_model_with_python_backend(
    production_config: mc.ModelConfig,
) -> None:
    adapted, notes = adapt_config(production_config)

    assert adapted.backend == "python"
    assert adapted.platform == ""
    assert adapted.parameters[ONNX_FILENAME_PARAMETER].string_value == "model.onnx"
    assert any("adapter" in note for note in notes)


def test_adapt_config_accepts_onnxruntime_platform_spelling() -> None:
    config = parse_config(PRODUCTION_ONNX_CONFIG.replace('backend: "onnxruntime"', ""))
    config.platform = "onnxruntime_onnx"

    adapted, _ = adapt_config(config)

    assert (adapted.backend, adapted.platform) == ("python", "")


def test_adapt_config_moves_gpu_instances_to_cpu_keeping_counts(
    production_config: mc.ModelConfig,
) -> None:
    adapted, notes = adapt_config(production_config)

    groups = [(g.name, g.count, g.kind, list(g.gpus)) for g in adapted.instance_group]
    assert groups == [
        ("gpu_group", 2, mc.ModelInstanceGroup.KIND_CPU, []),
        ("cpu_group", 1, mc.ModelInstanceGroup.KIND_CPU, []),
    ]
    assert any("KIND_GPU -> KIND_CPU" in note for note in notes)


def test_adapt_config_for_a_gpu_keeps_the_gpu_instances_and_drops_tensorrt(
    production_config: mc.ModelConfig,
) -> None:
    adapted, notes = adapt_config(production_config, gpu=True)

    groups = [(g.name, g.count, g.kind, list(g.gpus)) for g in adapted.instance_group]
    assert groups == [
        ("gpu_group", 2, mc.ModelInstanceGroup.KIND_GPU, [0, 1]),
        ("cpu_group", 1, mc.ModelInstanceGroup.KIND_CPU, []),
    ]
    assert (adapted.backend, adapted.platform) == ("python", "")
    assert not adapted.optimization.execution_accelerators.gpu_execution_accelerator
    assert any("KIND_GPU instances kept" in note for note in notes)
    assert not any("KIND_GPU -> KIND_CPU" in note for note in notes)
    # The adapter takes host arrays: the python backend's default hands it host tensors.
    assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in adapted.parameters


def test_adapt_config_drops_gpu_accelerators_and_says_so(
    production_config: mc.ModelConfig,
) -> None:
    adapted, notes = adapt_config(production_config)

    assert not adapted.optimization.HasField("execution_accelerators")
    assert not adapted.optimization.HasField("cuda")
    # What is not GPU-specific stays.
    assert adapted.optimization.priority == mc.ModelOptimizationPolicy.PRIORITY_MAX
    assert any("tensorrt" in note for note in notes)


def test_adapt_config_preserves_everything_else(production_config: mc.ModelConfig) -> None:
    adapted, _ = adapt_config(production_config)

    # Undo exactly the documented changes: what is left must equal the original.
    expected = mc.ModelConfig()
    expected.CopyFrom(production_config)
    expected.backend = "python"
    expected.parameters[ONNX_FILENAME_PARAMETER].string_value = "model.onnx"
    for group in expected.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        group.ClearField("gpus")
    expected.optimization.ClearField("execution_accelerators")
    expected.optimization.ClearField("cuda")
    assert adapted == expected
    assert adapted.parameters["intra_op_thread_count"].string_value == "2"
    assert adapted.dynamic_batching.max_queue_delay_microseconds == 2000
    assert adapted.model_warmup[0].batch_size == 4
    assert adapted.response_cache.enable


def test_adapt_config_leaves_its_argument_unchanged(production_config: mc.ModelConfig) -> None:
    before = format_config(production_config)

    adapt_config(production_config)

    assert format_config(production_config) == before


def test_adapt_config_moves_custom_onnx_filename_to_a_parameter() -> None:
    config = parse_config(PRODUCTION_ONNX_CONFIG)
    config.default_model_filename = "scorer.onnx"

    adapted, _ = adapt_config(config)

    # The python backend reads default_model_filename as the *python* file: it must go.
    assert adapted.default_model_filename == ""
    assert adapted.parameters[ONNX_FILENAME_PARAMETER].string_value == "scorer.onnx"


def test_adapt_config_drops_an_optimization_block_left_empty() -> None:
    config = parse_config(PRODUCTION_ONNX_CONFIG)
    config.optimization.ClearField("priority")

    adapted, _ = adapt_config(config)

    assert not adapted.HasField("optimization")


def _write_model(repository: Path, name: str, config: str, files: dict[str, bytes]) -> Path:
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    for filename, content in files.items():
        (model_dir / "1" / filename).write_bytes(content)
    return model_dir


def test_adapt_repository_links_onnx_and_installs_adapter(tmp_path: Path) -> None:
    source = tmp_path / "production"
    _write_model(source, "scorer", PRODUCTION_ONNX_CONFIG, {"model.onnx": b"onnx-bytes"})

    result = adapt_repository(source, tmp_path / "local")

    version_dir = tmp_path / "local" / "scorer" / "1"
    assert (version_dir / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (version_dir / "model.py").read_text() == ADAPTER_SOURCE.read_text()
    # The GPU path's executor goes beside it, whatever the instances' kind.
    assert (version_dir / GRAPH_SOURCE.name).read_text() == GRAPH_SOURCE.read_text()
    written = parse_config((tmp_path / "local" / "scorer" / "config.pbtxt").read_text())
    assert written == adapt_config(parse_config(PRODUCTION_ONNX_CONFIG))[0]
    assert result.adapted_models == ["scorer"]
    assert result.models[0].notes


def test_adapt_repository_copies_python_models_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "production"
    _write_model(source, "preprocess", PYTHON_CONFIG, {"model.py": b"# custom model\n"})
    _write_model(source, "scorer", PRODUCTION_ONNX_CONFIG, {"model.onnx": b"onnx-bytes"})

    result = adapt_repository(source, tmp_path / "local")

    local = tmp_path / "local" / "preprocess"
    assert (local / "config.pbtxt").read_text() == PYTHON_CONFIG
    assert (local / "1" / "model.py").read_bytes() == b"# custom model\n"
    assert result.model_names == ["preprocess", "scorer"]
    assert result.adapted_models == ["scorer"]


def test_adapt_repository_refuses_runtimes_the_wheel_lacks(tmp_path: Path) -> None:
    source = tmp_path / "production"
    config = PRODUCTION_ONNX_CONFIG.replace('backend: "onnxruntime"', 'platform: "tensorrt_plan"')
    _write_model(source, "engine", config, {"model.plan": b"plan"})

    with pytest.raises(RepositoryError, match=r"engine: runtime 'tensorrt_plan'"):
        adapt_repository(source, tmp_path / "local")


def test_adapt_repository_requires_config_and_onnx_file(tmp_path: Path) -> None:
    no_config = tmp_path / "a"
    (no_config / "scorer" / "1").mkdir(parents=True)
    with pytest.raises(RepositoryError, match=r"config\.pbtxt is missing"):
        adapt_repository(no_config, tmp_path / "a_local")

    no_onnx = tmp_path / "b"
    _write_model(no_onnx, "scorer", PRODUCTION_ONNX_CONFIG, {"other.bin": b""})
    with pytest.raises(RepositoryError, match=r"model\.onnx is missing"):
        adapt_repository(no_onnx, tmp_path / "b_local")


def test_adapt_repository_reports_unparseable_config(tmp_path: Path) -> None:
    source = tmp_path / "production"
    _write_model(source, "scorer", "name: [not pbtxt", {"model.onnx": b""})

    with pytest.raises(RepositoryError, match="scorer: cannot parse"):
        adapt_repository(source, tmp_path / "local")
