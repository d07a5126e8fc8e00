"""Where the nvidia-pytriton wheel keeps Triton: binary, backends, caches, stubs, libraries."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from triton_launcher.errors import PythonStubNotFound, TritonBinaryNotFound


@dataclass(frozen=True)
class TritonDistribution:
    """The `pytriton/tritonserver` directory of the wheel and the shared libraries beside it."""

    root: Path
    libs_dir: Path

    @classmethod
    def locate(cls) -> TritonDistribution:
        """Find the installed wheel without importing pytriton (its import is slow and noisy)."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonBinaryNotFound(
                Path("<pytriton not installed>/tritonserver/bin/tritonserver")
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        return cls.from_root(package_dir / "tritonserver")

    @classmethod
    def from_root(cls, root: Path) -> TritonDistribution:
        # auditwheel puts the vendored libraries next to the package: site-packages/<dist>.libs
        return cls(root=root, libs_dir=root.parent.parent / "nvidia_pytriton.libs")

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backends_dir(self) -> Path:
        return self.root / "backends"

    @property
    def caches_dir(self) -> Path:
        return self.root / "caches"

    @property
    def stubs_dir(self) -> Path:
        return self.root / "python_backend_stubs"

    def python_stub(self, version: str | None = None) -> Path:
        """The python-backend stub for `version` ("3.11"; default: the running interpreter)."""
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs_dir / version / "triton_python_backend_stub"
        if not stub.is_file():
            available = _versions(self.stubs_dir)
            raise PythonStubNotFound(stub, version, available)
        return stub

    def check(self) -> None:
        """Raise a clear error if the binary or the stub for this Python is missing."""
        if not self.binary.is_file():
            raise TritonBinaryNotFound(self.binary)
        self.python_stub()


def _versions(stubs_dir: Path) -> list[str]:
    """Stub versions in numeric order ("3.8" before "3.10")."""
    if not stubs_dir.is_dir():
        return []
    names = [p.name for p in stubs_dir.iterdir() if p.name.replace(".", "").isdigit()]
    return sorted(names, key=lambda name: tuple(int(part) for part in name.split(".")))
