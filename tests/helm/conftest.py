"""Fixtures for the Helm chart tests: a real helm binary and rendered manifests.

The helm v4 binary lives in helm/bin/helm (gitignored); scripts/install_helm.sh fetches it
(CI runs the script first; the session fixture runs it when the binary is missing).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "inference-gateway"
HELM_BIN = REPO_ROOT / "helm" / "bin" / "helm"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_helm.sh"
RELEASE = "rel"
NAMESPACE = "scoring"
# The Kubernetes version the chart is rendered for and validated against (strict schemas).
KUBE_VERSION = "1.33.0"
# Optional CRD-backed APIs; rendering with them exercises the gated objects.
CRD_API_VERSIONS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template` produced for one set of values."""

    objects: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> Manifest:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
        return found[0]

    def find(self, kind: str, name_suffix: str) -> Manifest | None:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        return found[0] if found else None

    def workloads(self) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "CronJob")]

    @staticmethod
    def pod_spec(obj: Manifest) -> Manifest:
        """The pod spec of a Deployment or CronJob."""
        if obj["kind"] == "CronJob":
            return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return obj["spec"]["template"]["spec"]

    @staticmethod
    def pod_labels(obj: Manifest) -> dict[str, str]:
        if obj["kind"] == "CronJob":
            return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        return obj["spec"]["template"]["metadata"]["labels"]

    @classmethod
    def containers(cls, obj: Manifest) -> list[Manifest]:
        spec = cls.pod_spec(obj)
        return [*spec.get("initContainers", []), *spec["containers"]]

    @staticmethod
    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        """matchLabels semantics: every selector pair is present in labels."""
        return all(labels.get(k) == v for k, v in selector.items())


class HelmFailed(AssertionError):
    """helm exited non-zero; the message carries its stdout and stderr (lint reports on stdout)."""

    def __init__(self, args: list[str], output: str) -> None:
        super().__init__(f"helm {' '.join(args)} failed:\n{output}")
        self.output = output


@pytest.fixture(scope="session")
def helm() -> Callable[..., str]:
    """Run the real helm binary; returns stdout, raises HelmFailed on a non-zero exit."""
    if not _helm_works():
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, capture_output=True, timeout=300)
        assert _helm_works(), f"{HELM_BIN} does not run after {INSTALL_SCRIPT}"

    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(HELM_BIN), *args], capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise HelmFailed(list(args), proc.stdout + proc.stderr)
        return proc.stdout

    return run


def _helm_works() -> bool:
    if not HELM_BIN.exists():
        return False
    proc = subprocess.run([str(HELM_BIN), "version"], capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


@pytest.fixture(scope="session")
def render(helm: Callable[..., str]) -> Callable[..., Rendered]:
    """Render the chart with values files and --set overrides (cached per argument set)."""
    cache: dict[tuple[Any, ...], Rendered] = {}

    def _render(
        values: Iterable[Path] = (),
        set_values: Iterable[str] = (),
        *,
        crds: bool = True,
    ) -> Rendered:
        key = (tuple(values), tuple(set_values), crds)
        if key not in cache:
            args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
            args += ["--kube-version", KUBE_VERSION]
            for path in key[0]:
                args += ["--values", str(path)]
            for item in key[1]:
                args += ["--set", item]
            if crds:
                for api in CRD_API_VERSIONS:
                    args += ["--api-versions", api]
            docs = yaml.safe_load_all(helm(*args))
            cache[key] = Rendered([d for d in docs if d])
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def defaults(render: Callable[..., Rendered]) -> Rendered:
    """The chart with its default values and the optional CRD APIs available."""
    return render()
