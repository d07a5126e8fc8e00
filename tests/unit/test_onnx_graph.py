"""The GPU adapter's graph executor, held to onnxruntime on the CPU.

The executor runs a graph with an array library's functions; on a KIND_GPU instance the library
is torch on the GPU (checked on a GPU machine: docs/gpu.md). Here it runs with numpy, so the
graph walk, the initializers and every op's semantics are checked against onnxruntime wherever
the suite runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from triton_launcher.adapters.onnx_graph import GraphSession, UnsupportedGraph, numpy_backend

FRAUD_MODEL = Path(__file__).resolve().parents[2] / "model_repository/fraud_scorer/1/model.onnx"


def _reference(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_the_fraud_model_gives_onnxruntimes_scores() -> None:
    rng = np.random.default_rng(7)
    rows = rng.random((512, 14), dtype=np.float32) * 100
    rows[:, 0] = rng.lognormal(4, 2, size=512).astype(np.float32)  # amounts up to ~1e5
    rows[0] = 0.0
    rows[1, 0] = 1e6  # the largest amount the spec allows
    session = GraphSession(FRAUD_MODEL, numpy_backend())

    (scores,) = session.run(["fraud_probability"], {"features": rows})
    (expected,) = _reference(FRAUD_MODEL, {"features": rows})

    assert session.input_names == ["features"]
    assert session.output_names == ["fraud_probability"]
    assert scores.shape == (512, 1)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_every_supported_op_matches_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "w")
    wt = numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "wt")
    bias = numpy_helper.from_array(rng.normal(size=(5,)).astype(np.float32), "bias")
    two = numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),  # (n, 4)
        helper.make_node("Gemm", ["m", "wt", "bias"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Add", ["r", "two"], ["a"]),
        helper.make_node("Log", ["a"], ["l"]),
        helper.make_node("Tanh", ["g"], ["t"]),
        helper.make_node("Sub", ["l", "t"], ["s"]),
        helper.make_node("Mul", ["s", "two"], ["mu"]),
        helper.make_node("Div", ["mu", "a"], ["d"]),
        helper.make_node("Neg", ["d"], ["ne"]),
        helper.make_node("Exp", ["t"], ["e"]),
        helper.make_node("Add", ["ne", "e"], ["sum"]),
        helper.make_node("Sigmoid", ["sum"], ["sg"]),
        helper.make_node("Identity", ["sg"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "all_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
        initializer=[w, wt, bias, two],
    )
    path = _save(graph, tmp_path / "all_ops.onnx")
    x = (rng.normal(size=(64, 6)) * 3).astype(np.float32)

    (got,) = GraphSession(path, numpy_backend()).run(["y"], {"x": x})
    (expected,) = _reference(path, {"x": x})

    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_gemm_with_a_transposed_and_without_c(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    b = numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "b"], ["y"], transA=1)],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
        initializer=[b],
    )
    path = _save(graph, tmp_path / "gemm.onnx")
    x = rng.normal(size=(3, 4)).astype(np.float32)

    (got,) = GraphSession(path, numpy_backend()).run(["y"], {"x": x})

    np.testing.assert_allclose(got, _reference(path, {"x": x})[0], rtol=1e-5, atol=1e-6)


def _one_node_graph(tmp_path: Path, node: onnx.NodeProto) -> Path:
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "one.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (helper.make_node("Softmax", ["x"], ["y"]), "Softmax\\): op not supported"),
        (helper.make_node("Relu", ["x"], ["y"], domain="com.example"), "domain 'com.example'"),
        (helper.make_node("Gemm", ["x", "x"], ["y"], other=2), r"attributes \['other'\]"),
    ],
)
def test_a_graph_it_cannot_run_is_refused_at_load(
    tmp_path: Path, node: onnx.NodeProto, message: str
) -> None:
    with pytest.raises(UnsupportedGraph, match=message):
        GraphSession(_one_node_graph(tmp_path, node), numpy_backend())


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    session = GraphSession(
        _one_node_graph(tmp_path, helper.make_node("Relu", ["x"], ["y"])), numpy_backend()
    )
    with pytest.raises(ValueError, match=r"\['x'\] are missing"):
        session.run(["y"], {"z": np.zeros((1, 3), dtype=np.float32)})
