#!/usr/bin/env bash
# Builds .gpu/ (git-ignored) for benchmarks/gpu/device_run.sh: what a bare GPU machine with no
# network lacks. Run here, after `make setup` and `apt-get install -y wrk`; the machine's Python
# is 3.12, so the wheels are fetched for cp312.
#   - triton.tar.xz: the nvidia-pytriton wheel's tritonserver, its vendored libraries and the
#     python-backend stub for 3.12 (the other stubs and their libpython left out: ~27 MB)
#   - whl/: tritonclient, python-rapidjson, protobuf and grpcio, as the launcher imports them,
#     and numpy 1.26 for the stub (the machine's numpy 2 breaks the stub's tensors: docs/gpu.md)
#     with an ml_dtypes built for it (tritonclient and onnx import ml_dtypes)
#   - bin/: wrk and its LuaJIT
set -euo pipefail
cd "$(dirname "$0")/../.."
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >>.git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/bin
excludes=()
for v in 3.8 3.9 3.10 3.11 3.13; do excludes+=(--exclude="python_backend_stubs/$v"); done
tar -C "$site" "${excludes[@]}" --exclude='libpython3-*' --exclude='__pycache__' \
    -cf - pytriton/__init__.py pytriton/tritonserver nvidia_pytriton.libs | xz -T2 -6 >.gpu/triton.tar.xz
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
fetch() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}
fetch .gpu/whl "protobuf==$(version protobuf)" "grpcio==$(version grpcio)" \
    "tritonclient==$(version tritonclient)" "python-rapidjson==$(version python-rapidjson)" \
    "numpy==$(version numpy)" "ml_dtypes==$(version ml_dtypes)"
cp "$(command -v wrk)" .gpu/bin/
cp -L /lib/x86_64-linux-gnu/libluajit-5.1.so.2 .gpu/bin/
du -sh .gpu
