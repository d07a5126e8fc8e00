"""``python -m benchmarks.gpu.probe``: does a python-backend model see the bytes a client sent?

The smallest end-to-end check of the python backend's data path, with no ONNX, torch or GPU in
it: a model that returns its FP32 input ``IN`` as ``SEEN`` and ``2 * IN + 1`` as ``OUT``. One
HTTP request with known values, then the answer compared value by value. Prints one line:
the stub's Python and numpy (from the model's own log line), and ``ok`` or what came back.

It tells the python backend's transport apart from the adapter on a machine where scores come
back wrong (docs/gpu.md): run it with each stub Python and numpy a machine has.
Exit status 0 when the values came back right, 1 when not, 2 when Triton did not start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx

from triton_launcher.errors import TritonLaunchError
from triton_launcher.launcher import TritonServer

MODEL = "echo"
VALUES = [float(i) + 0.5 for i in range(16)]

CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "IN", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [
  { name: "OUT", data_type: TYPE_FP32, dims: [ -1 ] },
  { name: "SEEN", data_type: TYPE_FP32, dims: [ -1 ] }
]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""

MODEL_PY = """
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_info(
            f"echo probe: python {sys.version.split()[0]}, numpy {np.__version__} "
            f"from {np.__file__}"
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            seen = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("OUT", (seen * 2 + 1).astype(np.float32)),
                        pb_utils.Tensor("SEEN", seen.astype(np.float32)),
                    ]
                )
            )
        return responses
"""


def write_repository(root: Path) -> Path:
    model_dir = root / MODEL
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(MODEL_PY))
    return root


def ask(http_url: str) -> tuple[int, dict[str, list[float]] | str]:
    body = {"inputs": [{"name": "IN", "shape": [len(VALUES)], "datatype": "FP32", "data": VALUES}]}
    response = httpx.post(f"{http_url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    if response.is_error:
        return response.status_code, response.text[:300]
    outputs = response.json().get("outputs", [])
    return response.status_code, {o["name"]: o.get("data", []) for o in outputs}


def stub_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "echo probe:" in line]
    return lines[-1].split("echo probe:", 1)[1].strip(' "') if lines else "stub said nothing"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="printed first on the result line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="echo-probe-") as tmp:
        server = TritonServer(write_repository(Path(tmp) / "repo"), startup_timeout_s=60)
        try:
            server.start()
        except TritonLaunchError as e:
            print(f"{args.label} | Triton did not start: {e}"[:600])
            return 2
        try:
            status, answer = ask(server.http_url)
            stub = stub_line(server.log_path.read_text(errors="replace"))
        finally:
            server.stop()
    result = verdict(status, answer)
    print(f"{args.label} | {stub} | {result}"[:800])
    return 0 if result == "ok" else 1


def verdict(status: int, answer: dict[str, list[float]] | str) -> str:
    expected = {"OUT": [v * 2 + 1 for v in VALUES], "SEEN": VALUES}
    return "ok" if status == 200 and answer == expected else f"WRONG: HTTP {status}, {answer}"


if __name__ == "__main__":
    sys.exit(main())
