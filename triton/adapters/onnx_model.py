"""Python-backend model that serves `model.onnx` with onnxruntime on CPU, or on the
instance's GPU for a KIND_GPU instance (``python -m triton_launcher --gpu``).

Installed by the launcher as `<model>/<version>/model.py` for models whose production config
uses the native onnxruntime backend (which the nvidia-pytriton wheel does not ship). Tensor
names and dtypes come from the model config, so the model looks the same to clients.

On a GPU it runs the graph with torch on that device (`onnx_graph.py`, installed beside this
file), behind the same numpy-in, numpy-out interface: a batch's inputs, concatenated on the
host, cross to the GPU as one copy per input and the outputs come back as one copy each, however
many requests the batch holds. (Triton hands the stub host tensors: the python backend's
default, which also copies any input a client put in GPU memory.) Without torch and CUDA the
load fails and says why, rather than quietly computing on the CPU.

`execute` concatenates the rows of all requests of a dynamic batch, runs the session once and
splits the outputs back: that single run is what makes dynamic batching pay off.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import triton_python_backend_utils as pb_utils

# Same parameter names as Triton's native onnxruntime backend, so a production config's thread
# settings keep their meaning here.
Array: TypeAlias = np.ndarray[Any, Any]

_INTRA_OP_PARAMETER = "intra_op_thread_count"
_INTER_OP_PARAMETER = "inter_op_thread_count"
_ONNX_FILENAME_PARAMETER = "onnx_model_filename"
_GRAPH_MODULE = "onnx_graph.py"
# The python-backend stub of the nvidia-pytriton wheel this project pins (0.7.0) moves no
# tensor bytes when the numpy it imports is 2.x: every output arrives empty ("output tensor
# shape does not match size") and inputs arrive as zeros. Measured with each stub Python (3.11,
# 3.12) and numpy 2.0-2.5; numpy 1.26 is right (docs/gpu.md).
_STUB_NUMPY_MAJOR = 1


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value != "" else default


class TritonPythonModel:
    """Triton python-backend entry point (names fixed by the python backend)."""

    def initialize(self, args: dict[str, str]) -> None:
        refusal = numpy_refusal(np.__version__, np.__file__)
        if refusal is not None:
            raise pb_utils.TritonModelException(refusal)
        config = json.loads(args["model_config"])
        self.model_name: str = config["name"]
        self.batching: bool = int(config.get("max_batch_size", 0)) > 0
        self.inputs: list[tuple[str, np.dtype[Any]]] = [
            (t["name"], np.dtype(pb_utils.triton_string_to_numpy(t["data_type"])))
            for t in config["input"]
        ]
        self.outputs: list[tuple[str, np.dtype[Any]]] = [
            (t["name"], np.dtype(pb_utils.triton_string_to_numpy(t["data_type"])))
            for t in config["output"]
        ]

        filename = _parameter(config, _ONNX_FILENAME_PARAMETER, "model.onnx")
        model_path = Path(args["model_repository"]) / args["model_version"] / filename
        on_gpu = args.get("model_instance_kind", "CPU") == "GPU"
        device_id = int(args.get("model_instance_device_id", "0") or 0)
        engine = "onnxruntime"
        try:
            if not on_gpu:
                # Imported here: a GPU instance runs torch and needs no onnxruntime.
                import onnxruntime as ort

                options = ort.SessionOptions()
                # One thread per instance by default: Triton's instance_group count gives
                # parallelism, and oversubscribing the cores only adds latency.
                options.intra_op_num_threads = int(_parameter(config, _INTRA_OP_PARAMETER, "1"))
                options.inter_op_num_threads = int(_parameter(config, _INTER_OP_PARAMETER, "1"))
                self.session: Any = ort.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self.runs_on = "onnxruntime CPU"
            else:
                engine = "the torch graph executor"
                graph = _load_graph_module(Path(__file__).with_name(_GRAPH_MODULE))
                try:
                    backend = graph.torch_backend(device_id)
                except (ImportError, RuntimeError) as e:
                    raise RuntimeError(
                        f"KIND_GPU instance, but torch cannot use GPU {device_id}: {e}"
                    ) from e
                self.session = graph.GraphSession(model_path, backend)
                self.runs_on = backend.name
        except Exception as e:  # ORT raises several unrelated types for unreadable models
            raise pb_utils.TritonModelException(f"{engine} cannot load {model_path}: {e}") from e
        logger = getattr(pb_utils, "Logger", None)  # set by the stub, absent in some builds
        if logger is not None:
            logger.log_info(f"{self.model_name}: {model_path.name} runs on {self.runs_on}")
        self._check_signature()

    def _check_signature(self) -> None:
        """Fail the load (with a reason Triton reports) if config and ONNX graph disagree."""
        if hasattr(self.session, "get_inputs"):
            graph_inputs = {i.name for i in self.session.get_inputs()}
            graph_outputs = {o.name for o in self.session.get_outputs()}
        else:
            graph_inputs = set(self.session.input_names)
            graph_outputs = set(self.session.output_names)
        missing_inputs = [n for n, _ in self.inputs if n not in graph_inputs]
        missing_outputs = [n for n, _ in self.outputs if n not in graph_outputs]
        if missing_inputs or missing_outputs:
            raise pb_utils.TritonModelException(
                f"config.pbtxt does not match the ONNX graph: inputs {missing_inputs} / outputs "
                f"{missing_outputs} are not in the graph (graph inputs {sorted(graph_inputs)}, "
                f"outputs {sorted(graph_outputs)})"
            )
        self.output_names = [n for n, _ in self.outputs]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: list[dict[str, Array] | None] = []
        responses: list[Any] = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                feeds.append(self._read_inputs(request))
            except ValueError as e:
                feeds.append(None)
                responses[index] = _error_response(str(e))

        valid = [i for i, feed in enumerate(feeds) if feed is not None]
        if self.batching and len(valid) > 1 and _stackable([feeds[i] for i in valid]):
            try:
                self._run_batched(valid, feeds, responses)
                return responses
            except Exception:
                pass  # one bad request must not fail the batch: retry one by one for the errors
        for i in valid:
            responses[i] = self._run_single(feeds[i])
        return responses

    def _read_inputs(self, request: Any) -> dict[str, Array]:
        feed: dict[str, Array] = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"model {self.model_name}: input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise ValueError(
                    f"model {self.model_name}: input {name!r} has dtype {array.dtype}, "
                    f"expected {dtype}"
                )
            feed[name] = array
        return feed

    def _run_batched(
        self,
        indices: list[int],
        feeds: list[dict[str, Array] | None],
        responses: list[Any],
    ) -> None:
        present = [f for f in (feeds[i] for i in indices) if f is not None]
        rows = [int(next(iter(f.values())).shape[0]) for f in present]
        merged = {n: np.concatenate([f[n] for f in present]) for n, _ in self.inputs}
        results = self.session.run(self.output_names, merged)
        bounds = np.cumsum(rows)[:-1]
        per_output = [np.split(result, bounds) for result in results]
        for position, i in enumerate(indices):
            responses[i] = self._response([parts[position] for parts in per_output])

    def _run_single(self, feed: dict[str, Array] | None) -> Any:
        try:
            return self._response(self.session.run(self.output_names, feed))
        except Exception as e:  # ORT's errors (bad shape, bad values) become the response
            return _error_response(f"model {self.model_name}: {self.runs_on} failed: {e}")

    def _response(self, results: list[Array]) -> Any:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(result, dtype=dtype))
            for (name, dtype), result in zip(self.outputs, results, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.session = None


def numpy_refusal(version: str, location: str) -> str | None:
    """Why the stub cannot serve with this numpy, or None when it can."""
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) <= _STUB_NUMPY_MAJOR:
        return None
    return (
        f"the python-backend stub imported numpy {version} ({location}); the nvidia-pytriton "
        "stub moves no tensor bytes with numpy 2 (every request would fail), so give the "
        "Python that runs the stub numpy<2 (docs/gpu.md)"
    )


def _load_graph_module(path: Path) -> Any:
    """``onnx_graph`` from beside this file: loaded by path, so it does not depend on what the
    python backend puts on ``sys.path``."""
    spec = importlib.util.spec_from_file_location("triton_adapter_onnx_graph", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _stackable(feeds: list[dict[str, Array] | None]) -> bool:
    """Requests can be concatenated if every input agrees on all but the batch dimension."""
    first = feeds[0]
    if first is None:
        return False
    for feed in feeds[1:]:
        if feed is None:
            return False
        for name, array in first.items():
            other = feed[name]
            if other.ndim != array.ndim or other.shape[1:] != array.shape[1:]:
                return False
    return True


def _error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[],
        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG),
    )
