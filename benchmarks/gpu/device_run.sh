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
import sys, numpy, onnxruntime, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "| numpy", numpy.__version__, "| onnxruntime", onnxruntime.__version__,
      onnxruntime.get_available_providers())
PY
site=/tmp/gpu-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/whl/*.whl || exit 1
tar -xJf .gpu/triton.tar.xz -C "$site" || exit 1
# The repository's triton/ is imported as triton_launcher (pyproject's package-dir).
mkdir -p "$site/triton_launcher" && cp -r triton/. "$site/triton_launcher/"
mkdir -p /tmp/gpu-bin && cp .gpu/bin/* /tmp/gpu-bin/
export PATH=/tmp/gpu-bin:$PATH LD_LIBRARY_PATH=/tmp/gpu-bin:${LD_LIBRARY_PATH:-}
# The python-backend stub links libpython3.12.so.1.0, and its embedded interpreter finds the
# machine's packages (numpy, torch) only through PYTHONPATH.
libpython=$(find /usr /opt /lib /lib64 -name 'libpython3.12.so.1.0' 2>/dev/null | head -1)
echo "libpython3.12: ${libpython:-not found}"
[ -n "$libpython" ] || exit 3
export LD_LIBRARY_PATH=$(dirname "$libpython"):$LD_LIBRARY_PATH
packages=$(python3 -c 'import site; print(":".join(site.getsitepackages()))')
export PYTHONPATH=$site:$PWD:$packages PYTHONUNBUFFERED=1
# Scores first: a server that answers wrongly is not worth timing (docs/gpu.md).
if timeout 120 python3 -m benchmarks.gpu_triton --check-only --kinds gpu "$@"; then
    timeout 300 python3 -m benchmarks.gpu_triton --out "$OUT/gpu.md" "$@"
else
    echo "== the GPU instance did not serve correct scores; a CPU-only Triton here (CUDA hidden):"
    CUDA_VISIBLE_DEVICES= timeout 120 python3 -m benchmarks.gpu_triton --check-only --kinds cpu "$@"
    exit 1
fi
