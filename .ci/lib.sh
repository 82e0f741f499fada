# What .ci/docker-e2e.sh and .ci/compose-e2e.sh share; sourced (bash), never run:
#
#   source "$(dirname "$0")/lib.sh" TAG      TAG starts each line it prints: [TAG] ...
#
# It changes to the checkout's root and sets ROOT (that folder), START and PHASE_START, VENV
# (default $ROOT/.venv), CACHE_ROOT (KONSPEKT_CI_CACHE, default /var/cache/konspekt-ci), LOG_DIR
# ($CACHE_ROOT/logs, created), PIDFILE (the CI dockerd's) and STARTED_DOCKERD (empty), and defines:
#   phase NAME         "[TAG] NAME: <s since the last phase> s (total <s> s)"
#   ci_engine CLEANUP  a Docker engine on unix:///var/run/docker.sock (.ci/dockerd.sh ensure): ours or
#                      the machine's root-only one reused, else one started (then STARTED_DOCKERD=1);
#                      and an EXIT trap that runs CLEANUP (the caller's function; $1 = the exit status),
#                      then stops the engine if ci_engine started it (unless CI_KEEP_ENGINE is set),
#                      and exits with that status. INT and TERM exit with 130 through it.
CI_TAG=$1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
START=$(date +%s)
PHASE_START=$START
phase() { local now; now=$(date +%s); echo "[$CI_TAG] $1: $((now - PHASE_START)) s (total $((now - START)) s)"; PHASE_START=$now; }

VENV="${VENV:-$ROOT/.venv}"
CACHE_ROOT="${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}"
LOG_DIR="$CACHE_ROOT/logs"
PIDFILE=/var/run/konspekt-ci-dockerd.pid
mkdir -p "$LOG_DIR"

STARTED_DOCKERD=
ci_engine() {
  CI_CLEANUP=$1
  trap ci_exit EXIT
  trap 'exit 130' INT TERM
  local engine
  engine=$(KONSPEKT_CI_DOCKERD_PIDFILE="$PIDFILE" KONSPEKT_CI_DOCKERD_LOG="$LOG_DIR/dockerd.log" bash .ci/dockerd.sh ensure)
  case "$engine" in started*) STARTED_DOCKERD=1 ;; esac
  echo "[$CI_TAG] Docker engine on unix:///var/run/docker.sock: $engine"
}

ci_exit() {
  local rc=$?
  "$CI_CLEANUP" "$rc" || true
  if [ -n "$STARTED_DOCKERD" ] && [ -z "${CI_KEEP_ENGINE:-}" ]; then
    echo "[$CI_TAG] stopping dockerd (pid $(cat "$PIDFILE" 2>/dev/null || echo gone))"
    KONSPEKT_CI_DOCKERD_PIDFILE="$PIDFILE" bash .ci/dockerd.sh stop || true
  fi
  exit "$rc"
}
