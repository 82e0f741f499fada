#!/usr/bin/env bash
# The CI's own Docker engine: dockerd on a unix socket and on tcp://127.0.0.1:2375 (standing in
# for docker-proxy), known by its PID file. .ci/docker-e2e.sh starts and stops it with this, and
# tests/test_e2e_docker_restart.py stops and restarts it between two tries of a task. Run as root.
#
#   .ci/dockerd.sh start     start it (unless it runs) and wait until it answers; prints its PID
#   .ci/dockerd.sh stop      stop the dockerd named in the PID file (SIGTERM; SIGKILL after 30 s)
#   .ci/dockerd.sh running   exit 0 when the dockerd named in the PID file is alive
#   .ci/dockerd.sh ensure    an engine that answers: "reused" when one already did (left alone
#                            afterwards), else "started <pid>" (the caller stops it when done)
#
# Only the dockerd of the PID file is ever signalled: an engine started some other way is left alone.
set -euo pipefail
PIDFILE="${KONSPEKT_CI_DOCKERD_PIDFILE:-/var/run/konspekt-ci-dockerd.pid}"
LOG="${KONSPEKT_CI_DOCKERD_LOG:-${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}/logs/dockerd.log}"
DOCKER_URL=tcp://127.0.0.1:2375

pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE"; }
alive() { local p; p=$(pid) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = dockerd ]; }
answers() { DOCKER_HOST=$DOCKER_URL docker info >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if ! alive; then
      mkdir -p "$(dirname "$LOG")"
      # Default networking (bridge + iptables): compose's networks and service DNS need it.
      # stdin/stdout/stderr detached: a caller that captures output is not held open by the daemon
      dockerd \
        -H unix:///var/run/docker.sock -H "$DOCKER_URL" --pidfile "$PIDFILE" \
        </dev/null >>"$LOG" 2>&1 &
      started=$!
      for _ in $(seq 1 120); do
        answers && break
        kill -0 "$started" 2>/dev/null || { tail -n 30 "$LOG" >&2; echo "dockerd died" >&2; exit 1; }
        sleep 0.5
      done
    fi
    answers || { tail -n 30 "$LOG" >&2; echo "dockerd never answered on $DOCKER_URL" >&2; exit 1; }
    pid
    ;;
  stop)
    alive || exit 0
    p=$(pid)
    kill "$p"
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
    ;;
  running)
    alive
    ;;
  ensure)
    if answers; then echo reused; else echo "started $(bash "$0" start)"; fi
    ;;
  *)
    echo "usage: $0 start|stop|running|ensure" >&2
    exit 2
    ;;
esac
