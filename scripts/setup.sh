#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian machine with Python 3.11 (as root, or with sudo):
# the real Prometheus/Alertmanager binaries and validators from Debian, and a virtualenv with the package.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# callgrind counts the SDK benchmark's instructions (a figure no other load on the machine moves).
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
# Headless Chromium for the dashboard's browser tests (AMTP_OBS_NO_BROWSER=1 skips it).
if [ "${AMTP_OBS_NO_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.amtp-obs-installed"
want=$(cat pyproject.toml apps/otel-verify/requirements.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[stack,dev]'
  echo "$want" > "$stamp"
fi
echo "==> setup done"
