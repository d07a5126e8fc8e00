#!/usr/bin/env bash
# Installs what the local stack and the tests need, idempotently: Debian's redis-server,
# libpython (the Triton python-backend stub links it) and wrk (the benchmarks' load generator;
# a test checks the benchmark's wrk script against it), a virtualenv with the pinned
# packages, and checks the model artifact. Safe to re-run; fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
py_minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
ldconfig -p 2>/dev/null | grep -q "libpython${py_minor}.so.1.0" || need_apt+=("libpython${py_minor}")
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} (apt)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: creating $VENV and installing pinned packages"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[triton,train,dev]"
  touch "$stamp"
fi

if [ ! -s model_repository/fraud_scorer/1/model.onnx ]; then
  echo "setup: model artifact missing, regenerating it"
  "$VENV/bin/python" -m training.train_fraud_scorer
fi
