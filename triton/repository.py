"""Adapt a production model repository to the local CPU runtime.

Production runs the stock NGC Triton image, where an ONNX model is served by the native
`onnxruntime` backend, often on GPU with TensorRT. The nvidia-pytriton wheel we run locally ships
only the python backend, so each such model is rewritten to a python-backend model that serves
the *same* `model.onnx` through `adapters/onnx_model.py`, with the same name, tensors, batching,
warm-up, version policy, instance count and parameters. One repository, two runtimes.

The config functions are pure (ModelConfig in, ModelConfig out) so they are unit-tested without a
server; `adapt_repository` does the file work.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from triton_launcher.errors import RepositoryError

logger = logging.getLogger(__name__)

CONFIG_FILENAME: Final = "config.pbtxt"
ADAPTER_SOURCE: Final = Path(__file__).parent / "adapters" / "onnx_model.py"
# The python backend loads `<version>/model.py` unless default_model_filename says otherwise.
ADAPTER_FILENAME: Final = "model.py"
GRAPH_SOURCE: Final = Path(__file__).parent / "adapters" / "onnx_graph.py"
"""Installed beside the adapter: runs the graph with torch on a KIND_GPU instance."""
# Parameter through which the adapter learns which ONNX file to load (the onnxruntime backend's
# `default_model_filename` now names the python file, so it cannot carry it any more).
ONNX_FILENAME_PARAMETER: Final = "onnx_model_filename"
DEFAULT_ONNX_FILENAME: Final = "model.onnx"

_ONNX_BACKEND: Final = "onnxruntime"
_ONNX_PLATFORM: Final = "onnxruntime_onnx"
_PYTHON_BACKEND: Final = "python"
# Served by Triton core itself, so they run on the wheel as they are.
_CORE_PLATFORMS: Final = frozenset({"ensemble"})


@dataclass(frozen=True)
class ModelAdaptation:
    """What happened to one model on its way into the local repository."""

    name: str
    source_runtime: str
    adapted: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdaptedRepository:
    """The local, runnable repository and what was changed to get there."""

    path: Path
    models: tuple[ModelAdaptation, ...] = field(default_factory=tuple)

    @property
    def adapted_models(self) -> list[str]:
        """Names of the models now served through the ONNX adapter."""
        return [m.name for m in self.models if m.adapted]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]


def parse_config(text: str) -> mc.ModelConfig:
    """Parse `config.pbtxt` text into a ModelConfig (raises text_format.ParseError)."""
    return text_format.Parse(text, mc.ModelConfig())


def format_config(config: mc.ModelConfig) -> str:
    return str(text_format.MessageToString(config))


def runtime_of(config: mc.ModelConfig) -> str:
    """The backend or platform that serves this model, as Triton names it ('' if unset)."""
    return str(config.backend or config.platform)


def needs_onnx_adapter(config: mc.ModelConfig) -> bool:
    return bool(config.backend == _ONNX_BACKEND or config.platform == _ONNX_PLATFORM)


def adapt_config(config: mc.ModelConfig, *, gpu: bool = False) -> tuple[mc.ModelConfig, list[str]]:
    """Rewrite an onnxruntime model config to the python-backend ONNX adapter, on CPU
    (``gpu``: KIND_GPU instance groups stay, and the adapter runs on their GPUs).

    Returns the new config (the argument is not modified) and notes on what was dropped or
    changed, for the log. Everything the model's clients or the scheduler can observe is kept:
    name, inputs, outputs, max_batch_size, dynamic/sequence batching, warm-up, version policy,
    instance counts, parameters, response cache.
    """
    adapted = mc.ModelConfig()
    adapted.CopyFrom(config)
    notes: list[str] = []

    if needs_onnx_adapter(config):
        adapted.ClearField("platform")
        adapted.backend = _PYTHON_BACKEND
        onnx_filename = config.default_model_filename or DEFAULT_ONNX_FILENAME
        # default_model_filename would now point the python backend at the ONNX file.
        adapted.ClearField("default_model_filename")
        adapted.parameters[ONNX_FILENAME_PARAMETER].string_value = onnx_filename
        notes.append(f"served by the python-backend ONNX adapter (was {runtime_of(config)})")

    if not gpu:
        _to_cpu_instances(adapted, notes)
    elif any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in adapted.instance_group):
        notes.append("KIND_GPU instances kept: the adapter runs on their GPUs")
    # TensorRT and CUDA graphs belong to the native backend, on a GPU as well.
    _drop_gpu_optimizations(adapted, notes)
    return adapted, notes


def _to_cpu_instances(config: mc.ModelConfig, notes: list[str]) -> None:
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            # Keep `count`: it is how many instances the model gets, i.e. its parallelism.
            group.kind = mc.ModelInstanceGroup.KIND_CPU
            group.ClearField("gpus")
            notes.append(
                f"instance group {group.name or '(unnamed)'!s}: KIND_GPU -> KIND_CPU, "
                f"count {group.count or 1}"
            )


def _drop_gpu_optimizations(config: mc.ModelConfig, notes: list[str]) -> None:
    if not config.HasField("optimization"):
        return
    optimization = config.optimization
    accelerators = optimization.execution_accelerators
    dropped = [a.name for a in accelerators.gpu_execution_accelerator]
    # CPU accelerators (OpenVINO) belong to the native backend; the adapter runs plain ORT.
    dropped += [a.name for a in accelerators.cpu_execution_accelerator]
    if dropped:
        optimization.ClearField("execution_accelerators")
        notes.append(f"dropped execution accelerators: {', '.join(dropped)}")
    if optimization.HasField("cuda"):
        optimization.ClearField("cuda")
        notes.append("dropped optimization.cuda (CUDA graphs)")
    if optimization.ListFields() == []:
        config.ClearField("optimization")


def adapt_repository(source: Path, destination: Path, *, gpu: bool = False) -> AdaptedRepository:
    """Build the local repository for `source` under `destination` (created, must not exist);
    ``gpu`` keeps the models' KIND_GPU instances (see :func:`adapt_config`).

    Python-backend (and ensemble) models are copied as they are; onnxruntime models get the
    adapted config, their version directories' files linked, and the adapter as `model.py`.
    Any other runtime is refused up front: the wheel cannot serve it and saying so here is
    clearer than Triton's load error.
    """
    if not source.is_dir():
        raise RepositoryError(f"model repository {source} does not exist or is not a directory")
    destination.mkdir(parents=True, exist_ok=False)
    models: list[ModelAdaptation] = []
    for model_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        if model_dir.name.startswith("."):
            continue
        models.append(_adapt_model_dir(model_dir, destination / model_dir.name, gpu=gpu))
    if not models:
        raise RepositoryError(f"model repository {source} contains no model directories")
    return AdaptedRepository(path=destination, models=tuple(models))


def _adapt_model_dir(model_dir: Path, target: Path, *, gpu: bool) -> ModelAdaptation:
    config_path = model_dir / CONFIG_FILENAME
    if not config_path.is_file():
        raise RepositoryError(
            f"model {model_dir.name}: {config_path} is missing; the local runtime needs an "
            "explicit config.pbtxt"
        )
    try:
        config = parse_config(config_path.read_text())
    except text_format.ParseError as e:
        raise RepositoryError(f"model {model_dir.name}: cannot parse {config_path}: {e}") from e

    runtime = runtime_of(config)
    if runtime == _PYTHON_BACKEND or config.platform in _CORE_PLATFORMS:
        shutil.copytree(model_dir, target, symlinks=True)
        return ModelAdaptation(name=model_dir.name, source_runtime=runtime, adapted=False)
    if not needs_onnx_adapter(config):
        raise RepositoryError(
            f"model {model_dir.name}: runtime {runtime or '(none set)'!r} is not available "
            "locally; the nvidia-pytriton wheel has only the python backend, and the launcher "
            f"adapts only {_ONNX_BACKEND!r} / {_ONNX_PLATFORM!r} models to it"
        )

    adapted, notes = adapt_config(config, gpu=gpu)
    onnx_filename = adapted.parameters[ONNX_FILENAME_PARAMETER].string_value
    target.mkdir()
    versions = 0
    for entry in sorted(model_dir.iterdir()):
        if entry.name == CONFIG_FILENAME:
            continue
        if entry.is_dir() and entry.name.isdigit():
            if not (entry / onnx_filename).is_file():
                raise RepositoryError(
                    f"model {model_dir.name} version {entry.name}: {entry / onnx_filename} "
                    "is missing"
                )
            _link_tree(entry, target / entry.name)
            shutil.copyfile(ADAPTER_SOURCE, target / entry.name / ADAPTER_FILENAME)
            shutil.copyfile(GRAPH_SOURCE, target / entry.name / GRAPH_SOURCE.name)
            versions += 1
        else:
            # Label files and the like live next to config.pbtxt.
            _link(entry, target / entry.name)
    if versions == 0:
        raise RepositoryError(f"model {model_dir.name}: no numeric version directory found")
    (target / CONFIG_FILENAME).write_text(format_config(adapted))
    for note in notes:
        logger.info("model %s: %s", model_dir.name, note)
    return ModelAdaptation(
        name=model_dir.name, source_runtime=runtime, adapted=True, notes=tuple(notes)
    )


def _link_tree(source_dir: Path, target_dir: Path) -> None:
    target_dir.mkdir()
    for entry in source_dir.iterdir():
        if entry.name in (ADAPTER_FILENAME, GRAPH_SOURCE.name):
            continue  # replaced by the adapter
        _link(entry, target_dir / entry.name)


def _link(source: Path, target: Path) -> None:
    """Symlink, so multi-GB artifacts are not copied; copy where symlinks are not possible."""
    try:
        os.symlink(source.resolve(), target, target_is_directory=source.is_dir())
    except OSError:
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
