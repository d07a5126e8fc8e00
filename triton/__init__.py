"""Local NVIDIA Triton (CPU) from the nvidia-pytriton wheel: launcher and repository adapter."""

from triton_launcher.distribution import TritonDistribution
from triton_launcher.errors import (
    ModelLoadError,
    PythonStubNotFound,
    RepositoryError,
    TritonBinaryNotFound,
    TritonExitedEarly,
    TritonLaunchError,
    TritonStartupTimeout,
)
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port
from triton_launcher.repository import AdaptedRepository, ModelAdaptation, adapt_repository

__all__ = [
    "AdaptedRepository",
    "ModelAdaptation",
    "ModelLoadError",
    "PythonStubNotFound",
    "RepositoryError",
    "TritonBinaryNotFound",
    "TritonDistribution",
    "TritonExitedEarly",
    "TritonLaunchError",
    "TritonServer",
    "TritonStartupTimeout",
    "adapt_repository",
    "free_port",
]
