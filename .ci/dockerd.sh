#!/usr/bin/env bash
# The CI's own Docker engine: dockerd on a unix socket only root can use (0660 root:root) and on no
# TCP port, known by its PID file. .ci/docker-e2e.sh and .ci/compose-e2e.sh start and stop it with
# this, and tests/e2e/test_e2e_docker_restart.py stops and restarts it between two tries of a task. Run as root.
#
#   .ci/dockerd.sh start     start it (unless it runs) and wait until it answers; prints its PID
#   .ci/dockerd.sh stop      stop the dockerd named in the PID file (SIGTERM; SIGKILL after 30 s)
#   .ci/dockerd.sh running   exit 0 when the dockerd named in the PID file is alive
#   .ci/dockerd.sh ensure    an engine that answers on the socket: "reused" when one already did (ours,
#                            or the machine's own: a root-owned socket in a folder only root writes),
#                            left alone afterwards; else "started <pid>" (the caller stops it when done)
#
# Clients use unix:///var/run/docker.sock (KONSPEKT_CI_DOCKERD_SOCKET). Why no tcp://127.0.0.1:2375:
# every local user could drive a root daemon there, and any local user could listen on 2375 first
# and pose as the engine that CI builds and runs on. A root-owned socket in /var/run is neither.
# Only the dockerd of the PID file is ever signalled: an engine started some other way is left alone.
set -euo pipefail
PIDFILE="${KONSPEKT_CI_DOCKERD_PIDFILE:-/var/run/konspekt-ci-dockerd.pid}"
LOG="${KONSPEKT_CI_DOCKERD_LOG:-${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}/logs/dockerd.log}"
SOCKET="${KONSPEKT_CI_DOCKERD_SOCKET:-/var/run/docker.sock}"
DOCKER_URL="unix://$SOCKET"

pid() { [ -s "$PIDFILE" ] && cat "$PIDFILE"; }
alive() { local p; p=$(pid) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = dockerd ]; }
answers() { DOCKER_HOST=$DOCKER_URL docker info >/dev/null 2>&1; }
# the socket as dockerd --group root makes it: only root connects
root_only() { [ "$(stat -c '%a %u %g' "$SOCKET" 2>/dev/null)" = "660 0 0" ]; }
# a socket only root could have put there: root's, in a folder root owns and nobody else writes to
roots() {
  local dir; dir=$(dirname "$SOCKET")
  [ -S "$SOCKET" ] && [ "$(stat -c %u "$SOCKET")" = 0 ] && [ "$(stat -L -c %u "$dir")" = 0 ] \
    && (( (8#$(stat -L -c %a "$dir") & 8#022) == 0 ))
}
describe() { stat -c '%a %U:%G' "$SOCKET" 2>/dev/null || echo missing; }

case "${1:-}" in
  start)
    if ! alive; then
      if answers; then
        echo "a Docker daemon not started by $0 answers on $SOCKET: not starting a second one" >&2; exit 1
      fi
      mkdir -p "$(dirname "$LOG")"
      # Default networking (bridge + iptables): compose's networks and service DNS need it.
      # --group root: the socket is 0660 root:root (dockerd's default group, docker, would let its members in).
      # stdin/stdout/stderr detached: a caller that captures output is not held open by the daemon
      dockerd -H "$DOCKER_URL" --group root --pidfile "$PIDFILE" \
        </dev/null >>"$LOG" 2>&1 &
      started=$!
      for _ in $(seq 1 120); do
        answers && break
        kill -0 "$started" 2>/dev/null || { tail -n 30 "$LOG" >&2; echo "dockerd died" >&2; exit 1; }
        sleep 0.5
      done
    fi
    answers || { tail -n 30 "$LOG" >&2; echo "dockerd never answered on $DOCKER_URL" >&2; exit 1; }
    if ! root_only; then
      echo "$SOCKET is $(describe), not 660 root:root: stop this dockerd ($0 stop) and start it again" >&2; exit 1
    fi
    if tr '\0' ' ' <"/proc/$(pid)/cmdline" | grep -q 'tcp://'; then
      echo "dockerd $(pid) also listens on TCP (started by an older $0): stop it and start it again" >&2; exit 1
    fi
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
    if alive; then
      bash "$0" start >/dev/null  # ours: checked as start checks it (the socket's owner and mode, no TCP)
      echo reused
    elif answers; then
      roots || { echo "a Docker daemon answers on $SOCKET ($(describe), in $(dirname "$SOCKET")), but not one only root could have started: refusing it" >&2; exit 1; }
      echo reused
    else
      echo "started $(bash "$0" start)"
    fi
    ;;
  *)
    echo "usage: $0 start|stop|running|ensure" >&2
    exit 2
    ;;
esac
