#!/bin/sh
# Build the konspekt task images into the Docker daemon at $DOCKER_HOST (default: the local one).
#
#   images/build.sh                 every images/<name>/Dockerfile except airflow's and base's
#   images/build.sh asr summarize   just these
#   images/build.sh base            only the bases
#
# Image names match the DAG's: ${KONSPEKT_IMAGE_PREFIX:-konspekt}-<name>:${KONSPEKT_IMAGE_TAG:-latest}.
# Each family is built FROM the shared bases of images/base/Dockerfile, which are built first, under
# the same prefix and tag (konspekt-base, -base-ffmpeg, -base-torch, -base-ffmpeg-torch, -base-cuda):
# a family names the ones it needs in its `ARG KONSPEKT_BASE...=` lines. A family's own Dockerfile
# (its dependencies, LABELs, CMD) becomes <prefix>-<name>-deps:<tag>; the task image <prefix>-<name>:<tag>
# is that plus the konspekt layer, images/base/konspekt/Dockerfile, the same for every family.
# Environment (all optional):
#   KONSPEKT_GPU=true        CUDA variants: the ASR image on konspekt-base-cuda (konspekt-base built on
#                            $CUDA_BASE_IMAGE) with whisperx, CUDA torch in konspekt-base-torch (summarize)
#                            and konspekt-base-ffmpeg-torch (train)
#   BASE_IMAGE               the OS the bases start from (default images/base/Dockerfile's, debian:bookworm-slim)
#   CUDA_BASE_IMAGE          default nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
#   ASR_GPU_REQUIREMENTS     the GPU ASR image's lock, default requirements/whisperx.txt
#   TORCH_CUDA_VARIANT       default cu128 (a PyTorch wheel index name)
#   TORCH_INDEX_URL          the torch index; unset or empty = images/base/Dockerfile's (PyTorch's own index),
#                            none = only images/wheels/ + PyPI (what CI uses, with a local CPU wheel)
#   DOCKER_BUILD_FLAGS       extra `docker build` flags, e.g. "--network host"
#   KONSPEKT_BUILD_LOG_DIR   write each build's output to <dir>/<name>.log instead of the terminal (a base:
#                            <dir>/base-ffmpeg.log, ...; a family: <dir>/asr-deps.log, then <dir>/asr.log)
# Rebuilding is incremental: unchanged layers come from the daemon's cache.
# POSIX sh: the compose image-builder runs it in the docker:cli (busybox) image.
set -eu
cd "$(dirname "$0")/.."

prefix=${KONSPEKT_IMAGE_PREFIX:-konspekt}
tag=${KONSPEKT_IMAGE_TAG:-latest}
case "$(printf %s "${KONSPEKT_GPU:-false}" | tr '[:upper:]' '[:lower:]')" in
  1|true|yes|on) gpu=1 ;;
  *) gpu= ;;
esac

names=${*:-$(sh images/families.sh)}  # the families asked for, else every one

for family in $names; do
  case "$family" in */*|airflow) echo "[images] $family is no task image family" >&2; exit 2 ;; esac
  [ -f "images/$family/Dockerfile" ] || { echo "[images] no images/$family/Dockerfile" >&2; exit 2; }
done

# The daemon may still be starting (dind listens only after ~15 s): wait for it, up to 3 minutes.
waited=0
until docker version >/dev/null 2>&1; do
  if [ "$waited" -ge 180 ]; then
    echo "[images] no Docker daemon answers at ${DOCKER_HOST:-the default socket}" >&2
    docker version >&2 || true
    exit 1
  fi
  sleep 2; waited=$((waited + 2))
done

# build LOGNAME IMAGE DIR [docker build arguments]: one timed `docker build` of images/DIR/Dockerfile
# (with KONSPEKT_BUILD_LOG_DIR, its output goes to <dir>/LOGNAME.log). POSIX sh has no local
# variables: it sets image, name and b_*, build_base sets bb_*, and the loop below uses others.
build() {
  b_log=$1 image=$2 name=$3
  shift 3
  b_start=$(date +%s)
  echo "[images] building $image"
  # shellcheck disable=SC2086  # DOCKER_BUILD_FLAGS is a list of flags
  if [ -n "${KONSPEKT_BUILD_LOG_DIR:-}" ]; then
    mkdir -p "$KONSPEKT_BUILD_LOG_DIR"
    b_log="$KONSPEKT_BUILD_LOG_DIR/$b_log.log"
    if ! docker build ${DOCKER_BUILD_FLAGS:-} "$@" -f "images/$name/Dockerfile" -t "$image" . >"$b_log" 2>&1; then
      tail -n 60 "$b_log" >&2
      echo "[images] $image FAILED after $(( $(date +%s) - b_start )) s (full log: $b_log)" >&2
      exit 1
    fi
  else
    docker build ${DOCKER_BUILD_FLAGS:-} "$@" -f "images/$name/Dockerfile" -t "$image" .
  fi
  echo "[images] $image: $(( $(date +%s) - b_start )) s"
}

# build_base FLAVOUR: $prefix-FLAVOUR:$tag from images/base/Dockerfile, once a run (later calls
# find it built). Flavours:  base = target os,  base-ffmpeg = target ffmpeg,  base-torch = target
# torch,  base-ffmpeg-torch = target ffmpeg-torch (both + the torch choice), all on BASE_IMAGE;
# base-cuda = target os on CUDA_BASE_IMAGE.
built_bases=" "
build_base() {
  case "$built_bases" in *" $1 "*) return 0 ;; esac
  bb_flavour=$1
  set --
  if [ -n "${BASE_IMAGE:-}" ]; then set -- --build-arg "BASE_IMAGE=$BASE_IMAGE"; fi
  case "$bb_flavour" in
    base) set -- "$@" --target os ;;
    base-cuda)
      set -- --target os --build-arg "BASE_IMAGE=${CUDA_BASE_IMAGE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}" ;;
    base-ffmpeg) set -- "$@" --target ffmpeg ;;
    base-torch|base-ffmpeg-torch)
      set -- "$@" --target "${bb_flavour#base-}"
      if [ -n "$gpu" ]; then set -- "$@" --build-arg "TORCH_VARIANT=${TORCH_CUDA_VARIANT:-cu128}"; fi
      case "${TORCH_INDEX_URL:-}" in
        "") ;;
        none) set -- "$@" --build-arg "TORCH_INDEX_URL=" ;;
        *) set -- "$@" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" ;;
      esac ;;
    *) echo "[images] unknown base $bb_flavour (images/base/Dockerfile: base, base-ffmpeg, base-torch," \
         "base-ffmpeg-torch, base-cuda)" >&2
       exit 2 ;;
  esac
  build "$bb_flavour" "$prefix-$bb_flavour:$tag" base "$@"
  built_bases="$built_bases$bb_flavour "
}

# bases_of FAMILY: the bases it builds FROM, one ARG=FLAVOUR a line: its `ARG KONSPEKT_BASE...=` lines
# (KONSPEKT_BASE_FFMPEG_TORCH -> base-ffmpeg-torch). The GPU ASR image gets the CUDA flavour of konspekt-base.
bases_of() {
  sed -n 's/^ARG \(KONSPEKT_BASE[A-Z_]*\)=.*/\1/p' "images/$1/Dockerfile" | while read -r bo_arg; do
    bo_flavour=$(printf %s "$bo_arg" | sed 's/^KONSPEKT_//; s/_/-/g' | tr '[:upper:]' '[:lower:]')
    if [ "$bo_flavour" = base ] && [ "$1" = asr ] && [ -n "$gpu" ]; then bo_flavour=base-cuda; fi
    echo "$bo_arg=$bo_flavour"
  done
}

total_start=$(date +%s)
# 1. The bases the families need (`images/build.sh base`: every one this build would use).
for family in $names; do
  if [ "$family" = base ]; then
    for flavour in base base-ffmpeg base-torch base-ffmpeg-torch ${gpu:+base-cuda}; do build_base "$flavour"; done
  else
    for pair in $(bases_of "$family"); do build_base "${pair#*=}"; done
  fi
done
# 2. The families: each one's dependencies FROM the bases of this prefix and tag, then the konspekt layer.
for family in $names; do
  [ "$family" != base ] || continue
  set --
  for pair in $(bases_of "$family"); do set -- "$@" --build-arg "${pair%%=*}=$prefix-${pair#*=}:$tag"; done
  if [ "$family" = asr ] && [ -n "$gpu" ]; then
    set -- "$@" --build-arg "ASR_REQUIREMENTS=${ASR_GPU_REQUIREMENTS:-requirements/whisperx.txt}"
  fi
  build "$family-deps" "$prefix-$family-deps:$tag" "$family" "$@"
  build "$family" "$prefix-$family:$tag" base/konspekt \
    --build-arg "DEPS=$prefix-$family-deps:$tag" --build-arg "FAMILY=$family"
done
echo "[images] all built in $(( $(date +%s) - total_start )) s"
