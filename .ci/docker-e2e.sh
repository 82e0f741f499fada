#!/usr/bin/env bash
# CI, docker mode: a real Docker engine builds the task images from images/ and runs the
# lecture_to_pdf DAG with DockerOperator tasks (tests/e2e/test_e2e_docker.py). Run as root.
#
#   .ci/docker-e2e.sh                 VENV=<venv with konspekt[all,airflow,test]> (default .venv)
#
# Nothing is pulled from a registry: the OS image is built with debootstrap and imported,
# and image builds reach only Debian's archive and PyPI (plus local torch wheels).
# dockerd listens on the unix socket /var/run/docker.sock only (0660 root:root, no TCP port: see
# .ci/dockerd.sh), standing in for docker-proxy; when this script started it, it stops it by its PID
# file on exit. /var/lib/docker keeps the OS image and every layer between runs, so a rerun without
# changes builds nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh" docker-e2e  # ROOT (the working directory), phase, VENV, LOG_DIR, PIDFILE, ci_engine

DOCKER_URL=unix:///var/run/docker.sock
BASE_IMAGE="${KONSPEKT_CI_BASE_IMAGE:-konspekt-ci-debian:bookworm}"
TORCH_WHEELS="${KONSPEKT_CI_TORCH_WHEELS:-/opt/wheels}"
export DOCKER_HOST=$DOCKER_URL

# 1. Debian packages: the engine, debootstrap for the OS image, docker-compose v1 to validate compose.
bash .ci/need.sh "$LOG_DIR/apt.log" dockerd=docker.io debootstrap=debootstrap docker-compose=docker-compose
phase "packages"

# 2. The engine: reuse ours (by its PID file) or the machine's own root-only one on the socket, else
#    start ours (.ci/dockerd.sh; the restart test also uses it to stop and restart it). A daemon on
#    a TCP port is never used: anyone on this machine could have started it.
CLEANUP_FILES=()
remove_cleanup_files() { rm -f "${CLEANUP_FILES[@]}" 2>/dev/null || true; }
ci_engine remove_cleanup_files
phase "engine"

# 3. The stand-in OS image (no registry): .ci/standins/base.sh debootstraps bookworm once and
#    imports it as $BASE_IMAGE (also tagged debian:bookworm-slim); cached in /var/lib/docker.
KONSPEKT_CI_BASE_IMAGE="$BASE_IMAGE" KONSPEKT_STANDINS_LOG_DIR="$LOG_DIR" bash .ci/standins/base.sh
phase "OS image"

# 4. The CPU task images, from the project's Dockerfiles: images/build.sh builds the shared bases
#    (images/base, on $BASE_IMAGE) first, then each family's dependencies FROM them and the konspekt
#    layer (images/base/konspekt) on those. pip in the build trusts this
#    machine's CA bundle (TLS is re-signed here); torch comes from the local CPU wheel, not an index.
ca_bundle="${PIP_CERT:-}"
[ -n "$ca_bundle" ] || ca_bundle=$("$VENV/bin/python" -m pip config get global.cert 2>/dev/null || true)
if [ -n "$ca_bundle" ] && [ -f "$ca_bundle" ]; then
  cp "$ca_bundle" images/common/extra-ca/ca-certificates.crt
  CLEANUP_FILES+=("$ROOT/images/common/extra-ca/ca-certificates.crt")
fi
shopt -s nullglob
wheels=("$TORCH_WHEELS"/torch-*+cpu-*.whl)
shopt -u nullglob
[ ${#wheels[@]} -gt 0 ] || { echo "[docker-e2e] no CPU torch wheel in $TORCH_WHEELS (set KONSPEKT_CI_TORCH_WHEELS)"; exit 1; }
for wheel in "${wheels[@]}"; do
  target="images/wheels/$(basename "$wheel")"
  if [ ! -f "$target" ]; then
    ln "$wheel" "$target" 2>/dev/null || cp "$wheel" "$target"
    CLEANUP_FILES+=("$ROOT/$target")
  fi
done
BASE_IMAGE="$BASE_IMAGE" TORCH_INDEX_URL=none DOCKER_BUILD_FLAGS="--network host --force-rm" \
  KONSPEKT_BUILD_LOG_DIR="$LOG_DIR/build" sh images/build.sh
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^${KONSPEKT_IMAGE_PREFIX:-konspekt}-" | sort
phase "task images"

# 5. docker-compose.yml is valid (Debian's docker-compose v1), with a throwaway .env.
envfile=$(mktemp /tmp/konspekt-compose-env.XXXXXX)
CLEANUP_FILES+=("$envfile")
sed -e "s/^AIRFLOW_ADMIN_PASSWORD=.*/AIRFLOW_ADMIN_PASSWORD=ci-$(date +%s)/" .env.example >"$envfile"
docker-compose --env-file "$envfile" -f docker-compose.yml config -q
echo "[docker-e2e] docker-compose config: valid"
phase "compose"

# 6. The DAG in docker mode against the engine (the DockerOperator on the unix socket), and the engine's
#    own checks (tests/deployment/test_ci_engine.py: the socket is root-only, dockerd listens on no TCP port).
#    The restart test stops and restarts the engine only when this script started it (STARTED_DOCKERD).
KONSPEKT_DOCKER_E2E=1 KONSPEKT_DOCKER_URL=$DOCKER_URL HF_HUB_OFFLINE=1 VENV="$VENV" \
  KONSPEKT_CI_DOCKERD_PIDFILE="$PIDFILE" KONSPEKT_CI_DOCKERD_LOG="$LOG_DIR/dockerd.log" \
  KONSPEKT_CI_DOCKERD_OURS="${STARTED_DOCKERD:-0}" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/deployment/test_ci_engine.py tests/e2e/test_e2e_docker.py \
  tests/dags/test_train_dag.py::test_train_dag_end_to_end_in_docker_mode tests/e2e/test_e2e_docker_restart.py ${PYTEST_ARGS:-}
phase "docker e2e"
