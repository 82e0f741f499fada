#!/usr/bin/env bash
# Local stand-ins for the registry images docker-compose.yml names, for machines that reach no
# container registry (this CI): each built FROM the debootstrap OS image (base.sh) with Debian packages
# and PyPI only. See .ci/standins/README.md for what each honours.
#
#   .ci/standins/build.sh [name ...]      names: postgres dind cli airflow redis registry (default: all)
#
#   KONSPEKT_STANDINS=auto    (default, for a person) per image: present locally -> used as it is;
#                             else `timeout 20 docker pull`; a stand-in is built only when that fails
#   KONSPEKT_STANDINS=always  (CI) never tries a registry: builds each stand-in that is missing or stale
#   PIP_CERT                  a CA bundle for pip inside the builds (copied into the build context
#                             for the build only)
#   KONSPEKT_STANDINS_LOG_DIR where build logs go (default /var/cache/konspekt-ci/logs/standins)
#
# A stand-in image carries the label konspekt.standin.hash = sha256 of its folder's files: an
# unchanged folder is never rebuilt, an edited one is. An image of the same name without that
# label (the real upstream image) is always kept. Run as root (base.sh runs debootstrap).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MODE="${KONSPEKT_STANDINS:-auto}"
BASE_IMAGE="${KONSPEKT_CI_BASE_IMAGE:-konspekt-ci-debian:bookworm}"
SLIM_IMAGE=debian:bookworm-slim
LABEL=konspekt.standin.hash
LOG_DIR="${KONSPEKT_STANDINS_LOG_DIR:-${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}/logs/standins}"
mkdir -p "$LOG_DIR" 2>/dev/null || { LOG_DIR="${TMPDIR:-/tmp}/konspekt-standins-logs"; mkdir -p "$LOG_DIR"; }
export KONSPEKT_STANDINS_LOG_DIR="$LOG_DIR" KONSPEKT_CI_BASE_IMAGE="$BASE_IMAGE"

ALL=(postgres dind cli airflow redis registry)
image_of() {
  case "$1" in
    postgres) echo postgres:16 ;;
    dind) echo docker:28-dind ;;
    cli) echo docker:28-cli ;;
    airflow) echo apache/airflow:3.3.2-python3.11 ;;
    redis) echo redis:7.2-bookworm ;;        # the celery profile's broker
    registry) echo registry:2 ;;             # the celery profile's image registry
    *) echo "[standins] unknown stand-in: $1 (known: ${ALL[*]})" >&2; return 1 ;;
  esac
}
log() { echo "[standins] $*"; }
case "$MODE" in auto|always) ;; *) echo "[standins] KONSPEKT_STANDINS=$MODE: use auto or always" >&2; exit 2 ;; esac
[ "$#" -gt 0 ] || set -- "${ALL[@]}"
for name in "$@"; do image_of "$name" >/dev/null; done
docker version >/dev/null 2>&1 || { echo "[standins] no Docker engine answers (${DOCKER_HOST:-default socket})" >&2; exit 1; }

# The hash of a stand-in's folder: every file's path and content (not the transient CA bundle).
folder_hash() {
  (cd "$HERE/$1" && find . -type f ! -name ca-certificates.crt -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
exists() { docker image inspect "$1" >/dev/null 2>&1; }
label_of() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
pulled() {
  local out
  if out=$(timeout 20 docker pull "$1" 2>&1); then log "$1: pulled"; return 0; fi
  log "$1: no pull ($(printf %s "$out" | tail -n 1))"
  return 1
}

CA_COPIES=()
cleanup() { local rc=$?; [ ${#CA_COPIES[@]} -eq 0 ] || rm -f "${CA_COPIES[@]}"; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT TERM

TOTAL_START=$(date +%s)
# 1. Decide: which stand-ins to build (auto mode may pull the real images instead).
to_build=()
for name in "$@"; do
  image=$(image_of "$name")
  want=$(folder_hash "$name")
  if exists "$image"; then
    have=$(label_of "$image")
    if [ -z "$have" ] || [ "$have" = "<no value>" ]; then
      log "$image: present, not a stand-in (kept as it is)"
      continue
    elif [ "$have" = "$want" ]; then
      log "$image: stand-in up to date (${want:0:12})"
      continue
    fi
    log "$image: stand-in is stale (${have:0:12} != ${want:0:12})"
  fi
  if [ "$MODE" = auto ] && pulled "$image"; then continue; fi
  to_build+=("$name")
done
need_slim=
if ! exists "$SLIM_IMAGE"; then
  if [ "$MODE" = auto ] && pulled "$SLIM_IMAGE"; then :; else need_slim=1; fi
fi

# 2. The OS image (debootstrap + import; also tagged debian:bookworm-slim when that is missing).
if [ ${#to_build[@]} -gt 0 ] || [ -n "$need_slim" ]; then
  start=$(date +%s)
  bash "$HERE/base.sh"
  log "OS image $BASE_IMAGE: $(( $(date +%s) - start )) s"
fi

# 3. The stand-ins.
ca="${PIP_CERT:-}"
for name in "${to_build[@]}"; do
  image=$(image_of "$name")
  hash=$(folder_hash "$name")
  logfile="$LOG_DIR/$name.log"
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" "$HERE/$name/ca-certificates.crt"
    CA_COPIES+=("$HERE/$name/ca-certificates.crt")
  fi
  old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  start=$(date +%s)
  log "building $image from .ci/standins/$name (log: $logfile)"
  if ! docker build --network host --force-rm --pull=false \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "$LABEL=$hash" \
      -t "$image" "$HERE/$name" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    echo "[standins] $image FAILED after $(( $(date +%s) - start )) s (full log: $logfile)" >&2
    exit 1
  fi
  rm -f "$HERE/$name/ca-certificates.crt"
  # the stale stand-in it replaces, now untagged (kept if a container still uses it)
  if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$image")" ] \
      && [ -z "$(docker image inspect -f '{{join .RepoTags ""}}' "$old_id" 2>/dev/null)" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
  log "$image: built in $(( $(date +%s) - start )) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
done
log "total: $(( $(date +%s) - TOTAL_START )) s (${#to_build[@]} built)"
