#!/usr/bin/env bash
# Runs on the lent GPU machine (the `device` tool: python3 3.12 with torch, no network), from
# the repository root with .gpu/ carried (benchmarks/gpu/payload.sh builds it):
#   bash benchmarks/gpu/device_run.sh [benchmarks.gpu_triton arguments]
# Writes the log and the markdown report to $OUT (default /tmp/gpu-out).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L
python3 - <<'PY'
import sys, numpy, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "| numpy", numpy.__version__)
PY
# The python-backend stub takes its packages from the `python` on PATH (the launcher puts the
# running interpreter's bin first), and it breaks on numpy 2, which this machine has. So
# everything runs from a venv that holds numpy 1.26 and sees the machine's torch and onnx.
venv=/tmp/gpu-venv
python3 -m venv --without-pip "$venv" || exit 1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# python3 may itself be a venv (then --system-site-packages would skip its packages): its
# site-packages go in through a .pth, after the venv's own, so the venv's numpy wins.
python3 -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/machine-packages.pth"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/whl/*.whl || exit 1
tar -xJf .gpu/triton.tar.xz -C "$site" || exit 1
# The repository's triton/ is imported as triton_launcher (pyproject's package-dir).
mkdir -p "$site/triton_launcher" && cp -r triton/. "$site/triton_launcher/"
mkdir -p /tmp/gpu-bin && cp .gpu/bin/* /tmp/gpu-bin/
export PATH=/tmp/gpu-bin:$PATH LD_LIBRARY_PATH=/tmp/gpu-bin:${LD_LIBRARY_PATH:-}
# The python-backend stub links libpython3.12.so.1.0.
libpython=$(find /usr /opt /lib /lib64 -name 'libpython3.12.so.1.0' 2>/dev/null | head -1)
echo "libpython3.12: ${libpython:-not found}"
[ -n "$libpython" ] || exit 3
export LD_LIBRARY_PATH=$(dirname "$libpython"):$LD_LIBRARY_PATH
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# The stub's transport on its own, first with the machine's numpy (the stub sees python3's
# packages), then with the venv's.
PYTHONPATH=$site:$PWD timeout 90 python3 -m benchmarks.gpu.probe --label "machine python3"
timeout 90 "$venv/bin/python" -m benchmarks.gpu.probe --label "venv, numpy 1.26" || exit 1
# Scores first: a server that answers wrongly is not worth timing (docs/gpu.md).
if timeout 120 "$venv/bin/python" -m benchmarks.gpu_triton --check-only --kinds gpu "$@"; then
    timeout 400 "$venv/bin/python" -m benchmarks.gpu_triton --out "$OUT/gpu.md" "$@"
else
    echo "== the GPU instance did not serve correct scores; a CPU-only Triton here (CUDA hidden):"
    CUDA_VISIBLE_DEVICES= timeout 120 "$venv/bin/python" -m benchmarks.gpu_triton --check-only \
        --kinds cpu "$@"
    exit 1
fi
