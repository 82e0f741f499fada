#!/usr/bin/env bash
# The celery profile's worker (docker-compose.yml `worker`): a Docker engine of its own, then the
# Airflow Celery worker, as one worker machine with its own daemon would have. Runs as root (the
# engine needs it, and the container `privileged`); the worker itself runs as KONSPEKT_WORKER_UID:0.
#
# The engine: its data root is a folder of this worker's own (named after its hostname) in the
# volume all workers share at /var/lib/konspekt-engines, held by a lock while the worker lives; a
# starting worker removes the folders no live worker holds, so `docker compose down` leaves no
# engine's images behind to pile up, and a restarted worker keeps its pulled images. It listens on
# 127.0.0.1:2375 inside this container only; no bridge and no iptables (every task container runs with
# network "none"); images are pulled from KONSPEKT_REGISTRY (plain HTTP allowed only for a host name
# without a dot, such as the compose service `registry:5000`; any other registry keeps TLS).
set -euo pipefail
log() { echo "[konspekt-worker] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "runs as root (user: \"0:0\" in compose): the worker's Docker engine needs it"; exit 1; }

# A restart keeps the container's files: a PID file left by an unclean stop blocks dockerd/containerd.
find /run /var/run \( -iname 'docker*.pid' -o -iname 'containerd*.pid' \) -delete 2>/dev/null || :

# cgroups writable and (v2) nested, as the official dind script does: under `privileged: true` the
# remounts do nothing; without it (CI: every capability but SYS_RESOURCE) they make the tree writable.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  [ -w /sys/fs/cgroup ] || mount -o remount,rw /sys/fs/cgroup
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control || :
elif [ -d /sys/fs/cgroup ]; then  # v1: a tmpfs holding one mount per hierarchy, each remounted
  [ -w /sys/fs/cgroup ] || mount -o remount,rw /sys/fs/cgroup
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [ -L "$d" ] || [ -w "$d" ] && continue  # cpu -> cpu,cpuacct: the real one is remounted
    mount -o remount,rw,bind "$d" 2>/dev/null && continue
    name=$(basename "$d")
    umount "$d"
    case "$name" in
      unified) mount -t cgroup2 cgroup2 "$d" ;;
      systemd) mount -t cgroup -o none,name=systemd cgroup "$d" ;;
      *) mount -t cgroup -o "$name" cgroup "$d" ;;
    esac
  done
fi
[ -w /proc/sys ] || mount -o remount,rw /proc/sys

ENGINES=/var/lib/konspekt-engines
mkdir -p "$ENGINES"
data_root="$ENGINES/$(hostname)"
exec 9>"$data_root.lock"  # fd 9 stays open in the engine and the worker: the lock lives as long as they do
flock -n 9 || { log "another engine holds $data_root"; exit 1; }
for lock in "$ENGINES"/*.lock; do  # the engines of workers gone (a lock nobody holds, older than a minute)
  [ "$lock" != "$data_root.lock" ] && [ -n "$(find "$lock" -mmin +1)" ] || continue
  if flock -n "$lock" rm -rf "${lock%.lock}"; then rm -f "$lock"; log "removed the engine folder of a gone worker: ${lock%.lock}"; fi
done

engine=(dockerd --data-root="$data_root" --host=tcp://127.0.0.1:2375 --host=unix:///var/run/docker.sock --tls=false
        --bridge=none --iptables=false)
case "${KONSPEKT_REGISTRY%%/*}" in  # plain HTTP only for a host of the compose network (no dot in its name)
  ''|*.*) ;;
  *) engine+=("--insecure-registry=${KONSPEKT_REGISTRY%%/*}") ;;
esac
log "starting the task engine: ${engine[*]}"
"${engine[@]}" >/var/log/dockerd.log 2>&1 &
engine_pid=$!
for _ in $(seq 1 120); do
  docker -H tcp://127.0.0.1:2375 version >/dev/null 2>&1 && break
  kill -0 "$engine_pid" 2>/dev/null || { tail -n 30 /var/log/dockerd.log >&2; log "the task engine did not start"; exit 1; }
  sleep 0.5
done
docker -H tcp://127.0.0.1:2375 version >/dev/null || { tail -n 30 /var/log/dockerd.log >&2; exit 1; }
log "task engine up ($(docker -H tcp://127.0.0.1:2375 version -f '{{.Server.Version}}'))"

# The registry's login (REGISTRY_USER/REGISTRY_PASSWORD), kept where the worker's tasks find it: the
# Docker client of each task (DockerOperator) reads $HOME/.docker/config.json when it pulls an image.
if [ -n "${REGISTRY_PASSWORD:-}" ]; then
  registry_host=${KONSPEKT_REGISTRY%%/*}
  for try in $(seq 1 24); do
    printf '%s' "$REGISTRY_PASSWORD" | setpriv --reuid="${KONSPEKT_WORKER_UID:-50000}" --regid=0 --clear-groups \
      env HOME="${AIRFLOW_USER_HOME_DIR:-/home/airflow}" docker -H tcp://127.0.0.1:2375 login \
      --username "${REGISTRY_USER:-konspekt}" --password-stdin "$registry_host" >/dev/null && break
    [ "$try" -lt 24 ] || { log "could not log in to $registry_host as ${REGISTRY_USER:-konspekt} (REGISTRY_USER, REGISTRY_PASSWORD in .env)"; exit 1; }
    sleep 5
  done
  log "logged in to $registry_host as ${REGISTRY_USER:-konspekt}"
fi

# The worker: as the Airflow user (group 0, as every other service), through the image's own entrypoint.
exec setpriv --reuid="${KONSPEKT_WORKER_UID:-50000}" --regid=0 --clear-groups \
  env HOME="${AIRFLOW_USER_HOME_DIR:-/home/airflow}" /entrypoint "$@"
