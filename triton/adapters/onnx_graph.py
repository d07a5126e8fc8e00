"""Runs an ONNX graph of a few standard ops with an array library's own functions: torch on
the instance's GPU, numpy on the CPU (the reference the tests hold it to).

The python-backend adapter uses it for KIND_GPU instances when onnxruntime has no CUDA
provider (PyPI's ``onnxruntime`` has none; ``onnxruntime-gpu`` is a separate package): a small
tabular model such as the fraud MLP is a handful of matrix products and elementwise ops. A graph
with any other op, domain or attribute is refused when the model loads, never run half-way.

Installed next to the adapter (``model.py``) in each version directory and loaded by path, so
it needs nothing from the gateway's packages: numpy and onnx, and torch for the GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

Tensor = Any
"""An array of the backend's library (numpy.ndarray, torch.Tensor)."""
Op = Callable[[list[Tensor], Mapping[str, Any]], Tensor]

_GEMM_ATTRIBUTES = frozenset({"alpha", "beta", "transA", "transB"})


class UnsupportedGraph(ValueError):
    """The graph uses something this executor does not run."""


@dataclass(frozen=True)
class Backend:
    name: str
    to_tensor: Callable[[np.ndarray[Any, Any]], Tensor]
    to_numpy: Callable[[Tensor], np.ndarray[Any, Any]]
    unary: Mapping[str, Callable[[Tensor], Tensor]]
    running: Callable[[], contextlib.AbstractContextManager[Any]]


def _gemm(xs: list[Tensor], attributes: Mapping[str, Any]) -> Tensor:
    a = xs[0].T if attributes.get("transA", 0) else xs[0]
    b = xs[1].T if attributes.get("transB", 0) else xs[1]
    out = (a @ b) * attributes.get("alpha", 1.0)
    if len(xs) > 2 and xs[2] is not None:
        out = out + xs[2] * attributes.get("beta", 1.0)
    return out


# Ops every array library spells alike. ONNX's multidirectional broadcasting is numpy's,
# which torch follows too.
_BINARY_OPS: Mapping[str, Op] = {
    "Add": lambda xs, _: xs[0] + xs[1],
    "Sub": lambda xs, _: xs[0] - xs[1],
    "Mul": lambda xs, _: xs[0] * xs[1],
    "Div": lambda xs, _: xs[0] / xs[1],
    "MatMul": lambda xs, _: xs[0] @ xs[1],
    "Gemm": _gemm,
    "Identity": lambda xs, _: xs[0],
}


def numpy_backend() -> Backend:
    def sigmoid(x: Tensor) -> Tensor:
        # exp(-log(1 + e^-x)): no overflow for large negative inputs.
        return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)

    @contextlib.contextmanager
    def running() -> Iterator[None]:
        # As onnxruntime: log(0) is -inf and log(-1) NaN, without a warning.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            yield

    return Backend(
        name="numpy",
        to_tensor=np.asarray,
        to_numpy=np.asarray,
        unary={
            "Relu": lambda x: np.maximum(x, 0),
            "Sigmoid": sigmoid,
            "Tanh": np.tanh,
            "Exp": np.exp,
            "Log": np.log,
            "Neg": np.negative,
        },
        running=running,
    )


def torch_backend(device_id: int) -> Backend:
    """torch on ``cuda:<device_id>``; ImportError or RuntimeError where there is none."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    device = torch.device("cuda", device_id)
    torch.cuda.set_device(device)
    gpu_name = torch.cuda.get_device_name(device)
    return Backend(
        name=f"torch {torch.__version__} on {gpu_name} (cuda:{device_id})",
        to_tensor=lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device),
        # .cpu() waits for the kernels: the outputs are complete when numpy sees them. The copy
        # gives canonical strides: a (n, 1) matmul result can keep a column-major stride that
        # numpy still calls contiguous, and the python backend then sizes the output wrongly.
        to_numpy=lambda t: np.array(t.detach().cpu().numpy(), order="C"),
        unary={
            "Relu": torch.relu,
            "Sigmoid": torch.sigmoid,
            "Tanh": torch.tanh,
            "Exp": torch.exp,
            "Log": torch.log,
            "Neg": torch.neg,
        },
        running=torch.inference_mode,
    )


@dataclass(frozen=True)
class _Node:
    op: Callable[[list[Tensor]], Tensor]
    inputs: tuple[str, ...]
    output: str


class GraphSession:
    """An ``onnxruntime.InferenceSession`` look-alike for the ops this module knows: ``run``
    takes and returns numpy arrays, whatever the backend computes on."""

    def __init__(self, model_path: Path, backend: Backend) -> None:
        model = onnx.load(str(model_path))
        graph = model.graph
        self.backend = backend
        self._constants: dict[str, Tensor] = {
            t.name: backend.to_tensor(numpy_helper.to_array(t)) for t in graph.initializer
        }
        # Older exporters list initializers among the inputs too: those are not fed.
        self.input_names = [i.name for i in graph.input if i.name not in self._constants]
        self.output_names = [o.name for o in graph.output]
        self._nodes = [self._compile(node, backend) for node in graph.node]

    @staticmethod
    def _compile(node: onnx.NodeProto, backend: Backend) -> _Node:
        where = f"node {node.name or node.op_type!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedGraph(f"{where}: domain {node.domain!r} is not ai.onnx")
        if len(node.output) != 1:
            raise UnsupportedGraph(f"{where}: {len(node.output)} outputs, expected 1")
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        allowed = _GEMM_ATTRIBUTES if node.op_type == "Gemm" else frozenset()
        if set(attributes) - allowed:
            raise UnsupportedGraph(f"{where}: attributes {sorted(set(attributes) - allowed)}")
        unary = backend.unary.get(node.op_type)
        binary = _BINARY_OPS.get(node.op_type)
        if unary is not None:
            op: Callable[[list[Tensor]], Tensor] = lambda xs: unary(xs[0])  # noqa: E731
        elif binary is not None:
            op = lambda xs: binary(xs, attributes)  # noqa: E731
        else:
            known = sorted([*backend.unary, *_BINARY_OPS])
            raise UnsupportedGraph(f"{where}: op not supported (supported: {', '.join(known)})")
        return _Node(op=op, inputs=tuple(node.input), output=node.output[0])

    def run(
        self, output_names: Sequence[str], feed: Mapping[str, np.ndarray[Any, Any]]
    ) -> list[np.ndarray[Any, Any]]:
        """numpy in, numpy out, whatever the backend computes on."""
        missing = [name for name in self.input_names if name not in feed]
        if missing:
            raise ValueError(f"inputs {missing} are missing")
        backend = self.backend
        with backend.running():
            values: dict[str, Tensor] = dict(self._constants)
            for name in self.input_names:
                values[name] = backend.to_tensor(feed[name])
            for node in self._nodes:
                # An empty name is an omitted optional input (Gemm's C).
                values[node.output] = node.op([values[n] if n else None for n in node.inputs])
            return [backend.to_numpy(values[name]) for name in output_names]
