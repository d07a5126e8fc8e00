"""The shipped fraud_scorer artifact: quality, portability, and agreement with its two configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from google.protobuf import text_format
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from tritonclient.grpc import model_config_pb2

from training import train_fraud_scorer as trainer
from training.fraud_data import FEATURE_NAMES, INTEGER_FEATURES, generate_transactions

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = REPO_ROOT / trainer.MODEL_RELPATH
METRICS_PATH = REPO_ROOT / trainer.METRICS_RELPATH
DEMO_PATH = REPO_ROOT / trainer.DEMO_RELPATH
CONFIG_PATH = REPO_ROOT / "model_repository/fraud_scorer/config.pbtxt"
SPEC_PATH = REPO_ROOT / "config/models.yaml"

# Ops every ONNX Runtime execution provider (CPU, CUDA, TensorRT) implements.
STANDARD_DOMAINS = {"", "ai.onnx"}
MIN_ROC_AUC = 0.85
BOOL_FEATURES = {"card_present", "is_online", "foreign_transaction"}


@pytest.fixture(scope="module")
def split() -> trainer.Split:
    return trainer.load_split()


@pytest.fixture(scope="module")
def held_out_scores(split: trainer.Split) -> NDArray[np.float32]:
    return trainer.predict_onnx(MODEL_PATH, split.x_held_out)


@pytest.fixture(scope="module")
def triton_config() -> model_config_pb2.ModelConfig:
    return text_format.Parse(CONFIG_PATH.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    model_spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())["models"]["fraud_scorer"]
    return model_spec


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(METRICS_PATH.read_text())
    return loaded


def test_shipped_model_separates_fraud_on_held_out_rows(
    split: trainer.Split, held_out_scores: NDArray[np.float32]
) -> None:
    auc = roc_auc_score(split.y_held_out, held_out_scores[:, 0])
    assert auc >= MIN_ROC_AUC, f"held-out ROC-AUC {auc:.4f} < {MIN_ROC_AUC}"


def test_shipped_model_beats_logistic_baseline(
    split: trainer.Split, held_out_scores: NDArray[np.float32]
) -> None:
    mlp_auc = roc_auc_score(split.y_held_out, held_out_scores[:, 0])
    baseline_auc = roc_auc_score(split.y_held_out, trainer.fit_baseline(split))
    assert mlp_auc > baseline_auc + 0.01, f"MLP {mlp_auc:.4f} vs logistic {baseline_auc:.4f}"


def test_outputs_are_probabilities(held_out_scores: NDArray[np.float32]) -> None:
    assert held_out_scores.dtype == np.float32
    assert np.all(np.isfinite(held_out_scores))
    assert held_out_scores.min() >= 0.0
    assert held_out_scores.max() <= 1.0


def test_fraud_rate_is_realistic() -> None:
    rate = float(generate_transactions(50_000).is_fraud.mean())
    assert 0.01 <= rate <= 0.03


def test_metrics_file_describes_the_shipped_artifact(metrics: dict[str, Any]) -> None:
    assert metrics["artifact_sha256"] == trainer.sha256_of(MODEL_PATH)
    assert metrics["features"] == list(FEATURE_NAMES)
    assert metrics["held_out_roc_auc"] > metrics["baseline_logistic_roc_auc"]


def test_graph_uses_only_standard_onnx_ops() -> None:
    model = onnx.load(str(MODEL_PATH))
    onnx.checker.check_model(model, full_check=True)
    assert {opset.domain for opset in model.opset_import} <= STANDARD_DOMAINS
    foreign_ops = {
        (n.domain, n.op_type) for n in model.graph.node if n.domain not in STANDARD_DOMAINS
    }
    assert not foreign_ops, f"non-standard ops would pin the model to the CPU EP: {foreign_ops}"
    # Triton 2.51's onnxruntime backend reads IR <= 9.
    assert model.ir_version <= 9


def _tensor_signature(value_info: onnx.ValueInfoProto) -> tuple[int, list[int | str]]:
    tensor_type = value_info.type.tensor_type
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor_type.shape.dim
    ]
    return tensor_type.elem_type, dims


def test_artifact_io_matches_triton_config(triton_config: model_config_pb2.ModelConfig) -> None:
    model = onnx.load(str(MODEL_PATH))
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    (config_input,) = triton_config.input
    (config_output,) = triton_config.output
    assert graph_input.name == config_input.name == "features"
    assert graph_output.name == config_output.name == "fraud_probability"
    assert config_input.data_type == config_output.data_type == model_config_pb2.TYPE_FP32
    in_type, in_dims = _tensor_signature(graph_input)
    out_type, out_dims = _tensor_signature(graph_output)
    assert in_type == out_type == onnx.TensorProto.FLOAT
    # Triton's dims exclude the batch dimension, which the graph leaves symbolic.
    assert isinstance(in_dims[0], str)
    assert isinstance(out_dims[0], str)
    assert in_dims[1:] == list(config_input.dims) == [len(FEATURE_NAMES)]
    assert out_dims[1:] == list(config_output.dims) == [1]


def test_triton_config_is_production_ready(triton_config: model_config_pb2.ModelConfig) -> None:
    assert triton_config.name == "fraud_scorer"
    assert triton_config.backend == "onnxruntime"
    assert triton_config.max_batch_size == 1024
    assert triton_config.HasField("dynamic_batching")
    # Callers batch on their side; a delay here makes every gateway call wait at an idle
    # instance (docs/measurements.md).
    assert triton_config.dynamic_batching.max_queue_delay_microseconds == 0
    assert [g.kind for g in triton_config.instance_group] == [
        model_config_pb2.ModelInstanceGroup.KIND_GPU
    ]
    warmed_batch_sizes = {warmup.batch_size for warmup in triton_config.model_warmup}
    assert {1, 64} <= warmed_batch_sizes
    assert all("features" in warmup.inputs for warmup in triton_config.model_warmup)
    assert not triton_config.response_cache.enable


def test_artifact_matches_gateway_spec(spec: dict[str, Any]) -> None:
    assert [feature["name"] for feature in spec["features"]] == list(FEATURE_NAMES)
    assert spec["triton"]["input"] == "features"
    assert spec["triton"]["datatype"] == "FP32"
    assert [output["name"] for output in spec["outputs"]] == ["fraud_probability"]
    model = onnx.load(str(MODEL_PATH))
    _, in_dims = _tensor_signature(model.graph.input[0])
    assert in_dims[1] == len(spec["features"])


def _read_demo() -> tuple[list[str], list[dict[str, str]]]:
    with DEMO_PATH.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_demo_cards_follow_spec_order_and_bounds(spec: dict[str, Any]) -> None:
    header, rows = _read_demo()
    assert header == ["card_id", *[feature["name"] for feature in spec["features"]]]
    assert len(rows) == 10_000
    assert rows[0]["card_id"] == "card-000001"
    assert len({row["card_id"] for row in rows}) == len(rows)
    for feature in spec["features"]:
        name = feature["name"]
        raw = [row[name] for row in rows]
        if name in INTEGER_FEATURES:
            assert all(value.lstrip("-").isdigit() for value in raw), f"{name} not integral"
        values = np.array(raw, dtype=np.float64)
        if feature["dtype"] == "bool" or name in BOOL_FEATURES:
            assert set(np.unique(values)) <= {0.0, 1.0}, name
            continue
        assert values.min() >= feature["min"], name
        assert values.max() <= feature["max"], name


@pytest.mark.slow
def test_regeneration_reproduces_shipped_artifact(tmp_path: Path) -> None:
    candidate = trainer.train(tmp_path).model
    ok, message = trainer.compare_with_shipped(candidate, MODEL_PATH)
    assert ok, message
