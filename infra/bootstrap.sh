#!/usr/bin/env bash
# Dev-host bootstrap for the AMTP observability stack: checks the Docker Engine and creates the
# external network `amtp_net` that docker-compose.observability.yml joins. Safe to run repeatedly.
set -euo pipefail

# The external network named in docker-compose.observability.yml (networks.amtp_net).
NETWORK=amtp_net

# --- Docker Engine installation -------------------------------------------------------------
# This script does not install packages; it tells you how when Docker is missing.
if ! command -v docker >/dev/null 2>&1; then
  cat >&2 <<'MSG'
Docker Engine is not installed. Install it with the official packages, for example on Debian/Ubuntu:
  curl -fsSL https://get.docker.com -o get-docker.sh && sudo sh get-docker.sh
  sudo usermod -aG docker "$USER"   # then log out and back in
See https://docs.docker.com/engine/install/ for other distributions.
MSG
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "Docker is installed but the engine is not reachable (is the daemon running, may this user use it?)." >&2
  exit 1
fi
if ! docker compose version >/dev/null 2>&1; then
  echo "The Docker Compose v2 plugin is missing: install docker-compose-plugin." >&2
  exit 1
fi

# --- Shared network -----------------------------------------------------------------------------
# Create amtp_net only when it does not exist yet (idempotent; the base stack may have created it).
if docker network inspect "$NETWORK" >/dev/null 2>&1; then
  echo "network $NETWORK already exists"
else
  # A concurrent run may win the race: accept the network if it exists afterwards.
  docker network create "$NETWORK" --label amtp.owner=bootstrap >/dev/null 2>&1 \
    || docker network inspect "$NETWORK" >/dev/null
  echo "network $NETWORK ready"
fi
