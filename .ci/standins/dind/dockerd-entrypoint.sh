#!/usr/bin/env bash
# The docker:28-dind stand-in's entrypoint, like the official one with DOCKER_TLS_CERTDIR="":
#   (no args) or "-..." -> dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 --tls=false [args]
#   dockerd ...         -> that dockerd command line, after the same preparation
#   anything else       -> exec'd as it is (e.g. sh)
# Preparation (as the official `dind` script): stale PID files removed, /tmp a tmpfs, cgroups
# writable, cgroup v2 nesting, iptables-legacy when the host uses it. Under `privileged: true`
# /sys/fs/cgroup and /proc/sys are already writable and those steps do nothing. Without it (this
# CI: no CAP_SYS_RESOURCE, so cap_add ALL, cap_drop SYS_RESOURCE, seccomp and apparmor unconfined:
# .ci/standins/compose.ci.yml) they are read-only and are remounted read-write here.
set -euo pipefail
log() { echo "[dind-standin] $*" >&2; }

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
    log "DOCKER_TLS_CERTDIR=$DOCKER_TLS_CERTDIR: this stand-in has no TLS mode; set DOCKER_TLS_CERTDIR=\"\""
    exit 1
  fi
  set -- dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 --tls=false "$@"
fi

[ "$1" = dockerd ] || exec "$@"
[ "$(id -u)" = 0 ] || { log "dockerd needs root (rootless mode is not implemented here)"; exit 1; }

# A restart keeps the container's files: a PID file left by an unclean stop blocks dockerd/containerd.
find /run /var/run \( -iname 'docker*.pid' -o -iname 'containerd*.pid' \) -delete 2>/dev/null || :

writable() { [ -w "$1" ]; }  # false on a read-only mount, even for root

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2
  if ! writable /sys/fs/cgroup; then
    log "/sys/fs/cgroup is read-only: remounting it read-write"
    mount -o remount,rw /sys/fs/cgroup
  fi
  # nesting, as the official dind: move our processes out of the root so controllers can be delegated
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers >/sys/fs/cgroup/cgroup.subtree_control || :
elif [ -d /sys/fs/cgroup ]; then
  # cgroup v1: a tmpfs holding one mount per hierarchy
  if ! writable /sys/fs/cgroup; then
    log "/sys/fs/cgroup is read-only: remounting it read-write"
    mount -o remount,rw /sys/fs/cgroup
  fi
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [ -L "$d" ] && continue               # cpu -> cpu,cpuacct: the real one is remounted
    writable "$d" && continue
    log "$d is read-only: remounting it read-write"
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

# Without `privileged` /proc/sys is read-only, and dockerd writes to it (ip_forward, bridge
# settings). docker-compose v1 cannot pass `systempaths=unconfined` (the CLI translates it, the API
# does not know it), so remount it here instead; CAP_SYS_ADMIN allows that.
if ! writable /proc/sys; then
  log "/proc/sys is read-only: remounting it read-write"
  mount -o remount,rw /proc/sys
fi

# As the official dind script: securityfs (AppArmor checks) and a tmpfs on /tmp.
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
  mount -t securityfs none /sys/kernel/security 2>/dev/null || log "could not mount securityfs (AppArmor may not work)"
fi
if ! mountpoint -q /tmp; then
  mount -t tmpfs none /tmp
fi

# iptables: nft by default; legacy when asked (DOCKER_IPTABLES_LEGACY=1), when legacy tables are in
# use in this network namespace, or when nft does not work (as the official entrypoint decides).
if [ -z "${DOCKER_IPTABLES_LEGACY+x}" ]; then
  DOCKER_IPTABLES_LEGACY=
  for f in /proc/net/ip_tables_names /proc/net/ip6_tables_names /proc/net/arp_tables_names; do
    if [ -s "$f" ] && [ -n "$(cat "$f" 2>/dev/null)" ]; then DOCKER_IPTABLES_LEGACY=1; fi
  done
  iptables-nft -nL >/dev/null 2>&1 || DOCKER_IPTABLES_LEGACY=1
fi
if [ -n "$DOCKER_IPTABLES_LEGACY" ]; then
  log "using iptables-legacy"
  update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
fi

log "starting: $*"
# docker-init (tini) as PID 1 reaps the zombie shims and forwards SIGTERM to dockerd.
exec docker-init -- "$@"
