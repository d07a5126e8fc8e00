"""The ONNX adapter refuses to load where the python-backend stub imported numpy 2.

The nvidia-pytriton stub moves no tensor bytes with numpy 2 (docs/gpu.md): every request would
fail with HTTP 500. The adapter runs inside the stub, so it sees the numpy the stub imported;
here the stub's utility module is a stand-in, and the numpy version is set per test."""

from __future__ import annotations

import importlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


class FakeModelException(Exception):
    pass


@pytest.fixture
def adapter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`onnx_model` imported with a stand-in for the stub's `triton_python_backend_utils`."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.TritonModelException = FakeModelException  # type: ignore[attr-defined]
    utils.triton_string_to_numpy = lambda name: {"TYPE_FP32": np.float32}[name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    monkeypatch.delitem(sys.modules, "triton_launcher.adapters.onnx_model", raising=False)
    yield importlib.import_module("triton_launcher.adapters.onnx_model")
    sys.modules.pop("triton_launcher.adapters.onnx_model", None)


def _cpu_args() -> dict[str, str]:
    config = {
        "name": "fraud_scorer",
        "max_batch_size": 1024,
        "input": [{"name": "features", "data_type": "TYPE_FP32"}],
        "output": [{"name": "fraud_probability", "data_type": "TYPE_FP32"}],
    }
    return {
        "model_config": json.dumps(config),
        "model_repository": str(REPOSITORY / "fraud_scorer"),
        "model_version": "1",
        "model_instance_kind": "CPU",
    }


@pytest.mark.parametrize("version", ["1.26.4", "1.21.0", "1.26.0rc1"])
def test_numpy_1_is_accepted(adapter: Any, version: str) -> None:
    assert adapter.numpy_refusal(version, "/site/numpy/__init__.py") is None


@pytest.mark.parametrize("version", ["2.0.2", "2.5.2", "2.3.0rc1", "3.0.0"])
def test_numpy_2_is_refused_with_the_version_and_where_it_came_from(
    adapter: Any, version: str
) -> None:
    refusal = adapter.numpy_refusal(version, "/opt/torch/.venv/numpy/__init__.py")

    assert refusal is not None
    assert f"numpy {version} (/opt/torch/.venv/numpy/__init__.py)" in refusal
    assert "numpy<2" in refusal


def test_the_model_does_not_load_under_numpy_2(
    adapter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter.np, "__version__", "2.5.2")

    with pytest.raises(FakeModelException, match=r"imported numpy 2\.5\.2 .*numpy<2"):
        adapter.TritonPythonModel().initialize(_cpu_args())


def test_the_model_loads_under_this_numpy(adapter: Any) -> None:
    model = adapter.TritonPythonModel()
    model.initialize(_cpu_args())

    assert model.runs_on == "onnxruntime CPU"
    assert model.output_names == ["fraud_probability"]
