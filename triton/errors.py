"""Typed errors of the Triton launcher.

Every failure to bring Triton up has its own class, so callers (the gateway CLI, test fixtures,
benchmarks) can react to the cause without matching on message text. Messages are written for
the person reading the terminal: what failed, where, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class TritonLaunchError(RuntimeError):
    """Base class: Triton could not be prepared or did not become ready."""


class RepositoryError(TritonLaunchError):
    """The model repository cannot be adapted for the local CPU runtime."""


class TritonBinaryNotFound(TritonLaunchError):
    """The `tritonserver` binary (from the nvidia-pytriton wheel) is missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"tritonserver binary not found at {path}. The local Triton comes from the "
            "nvidia-pytriton wheel: install it with `pip install nvidia-pytriton==0.7.0` "
            "(extra `triton` of this project), or pass the wheel's `pytriton/tritonserver` "
            "directory explicitly."
        )


class PythonStubNotFound(TritonLaunchError):
    """The wheel ships no python-backend stub for the running Python minor version."""

    def __init__(self, path: Path, python_version: str, available: list[str]) -> None:
        self.path = path
        self.python_version = python_version
        super().__init__(
            f"no python-backend stub for Python {python_version} at {path}; the wheel has "
            f"stubs for: {', '.join(available) or 'none'}. Run the launcher with one of those "
            "Python versions."
        )


class TritonExitedEarly(TritonLaunchError):
    """The server process exited before it became ready."""

    def __init__(self, exit_code: int, log_path: Path, log_tail: str) -> None:
        self.exit_code = exit_code
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(
            f"tritonserver exited with code {exit_code} before it became ready "
            f"(full log: {log_path}). Last log lines:\n{log_tail}"
        )


class ModelLoadError(TritonLaunchError):
    """One or more models failed to load; `reasons` holds Triton's own reason per model."""

    def __init__(self, reasons: Mapping[str, str], log_path: Path) -> None:
        self.reasons = dict(reasons)
        self.log_path = log_path
        details = "\n".join(f"  {name}: {reason}" for name, reason in sorted(self.reasons.items()))
        super().__init__(
            f"Triton failed to load {len(self.reasons)} model(s) (full log: {log_path}):\n{details}"
        )


class TritonStartupTimeout(TritonLaunchError):
    """The server did not report ready within the start-up timeout."""

    def __init__(self, timeout_s: float, log_path: Path, log_tail: str) -> None:
        self.timeout_s = timeout_s
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(
            f"tritonserver was not ready after {timeout_s:g} s (full log: {log_path}). "
            f"Last log lines:\n{log_tail}"
        )
