#!/usr/bin/env bash
# Build .venv-bench: a separate virtualenv holding the competitors of the SDK-overhead benchmark
# (OpenLIT and OpenLLMetry's opentelemetry-instrumentation-openai pin their own OpenTelemetry
# versions), plus this package and openai, so that every contestant runs on the same OTel SDK
# while the main .venv stays untouched. Idempotent: a complete .venv-bench is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
MAIN_PY="${BENCH_BASE_PYTHON:-$ROOT/.venv/bin/python}"
MARKER="$VENV/.amtp-bench-ready"

if [[ -f "$MARKER" ]]; then
  echo "bench venv ready: $VENV"
  exit 0
fi

# The interpreter behind the main venv, so both run the same Python.
BASE_PY="$("$MAIN_PY" -c 'import sys; print(sys._base_executable)' 2>/dev/null || command -v python3)"
"$BASE_PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
  -e "$ROOT" \
  openai \
  openlit \
  opentelemetry-instrumentation-openai \
  py-spy
"$VENV/bin/python" -m pip check || echo "warning: pip check reports conflicts (see above)" >&2
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("openlit", "opentelemetry-instrumentation-openai", "opentelemetry-sdk", "openai", "amtp-obs"):
    print(f"{name:40s} {version(name)}")
PY
touch "$MARKER"
echo "bench venv ready: $VENV"
