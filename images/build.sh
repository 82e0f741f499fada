#!/bin/sh
# Build the konspekt task images into the Docker daemon at $DOCKER_HOST (default: the local one).
#
#   images/build.sh                 every images/<name>/Dockerfile except airflow's
#   images/build.sh asr summarize   just these
#
# Image names match the DAG's: ${KONSPEKT_IMAGE_PREFIX:-konspekt}-<name>:${KONSPEKT_IMAGE_TAG:-latest}.
# Environment (all optional):
#   KONSPEKT_GPU=true        CUDA variants: the ASR image on $CUDA_BASE_IMAGE, CUDA torch in summarize/train
#   BASE_IMAGE               base of every image (default: each Dockerfile's, debian:bookworm-slim)
#   CUDA_BASE_IMAGE          default nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
#   ASR_GPU_REQUIREMENTS     the GPU ASR image's lock, default requirements/whisperx.txt
#   TORCH_CUDA_VARIANT       default cu128 (a PyTorch wheel index name)
#   TORCH_INDEX_URL          the torch index; unset or empty = each Dockerfile's (PyTorch's own index),
#                            none = only images/wheels/ + PyPI (what CI uses, with a local CPU wheel)
#   DOCKER_BUILD_FLAGS       extra `docker build` flags, e.g. "--network host"
#   KONSPEKT_BUILD_LOG_DIR   write each build's output to <dir>/<name>.log instead of the terminal
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

if [ "$#" -gt 0 ]; then
  names="$*"
else
  names=
  for dockerfile in images/*/Dockerfile; do
    name=$(basename "$(dirname "$dockerfile")")
    [ "$name" = airflow ] || names="$names $name"   # the Airflow image is compose's own build
  done
fi

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

total_start=$(date +%s)
for name in $names; do
  [ -f "images/$name/Dockerfile" ] || { echo "[images] no images/$name/Dockerfile" >&2; exit 2; }
  set --
  [ -n "${BASE_IMAGE:-}" ] && set -- "$@" --build-arg "BASE_IMAGE=$BASE_IMAGE"
  if [ "$name" = asr ] && [ -n "$gpu" ]; then
    set -- "$@" --build-arg "BASE_IMAGE=${CUDA_BASE_IMAGE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}" \
      --build-arg "ASR_REQUIREMENTS=${ASR_GPU_REQUIREMENTS:-requirements/whisperx.txt}"
  fi
  if grep -q '^ARG TORCH_VARIANT' "images/$name/Dockerfile"; then  # the images with torch: summarize, train
    [ -n "$gpu" ] && set -- "$@" --build-arg "TORCH_VARIANT=${TORCH_CUDA_VARIANT:-cu128}"
    case "${TORCH_INDEX_URL:-}" in
      "") ;;
      none) set -- "$@" --build-arg "TORCH_INDEX_URL=" ;;
      *) set -- "$@" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" ;;
    esac
  fi
  image="$prefix-$name:$tag"
  start=$(date +%s)
  echo "[images] building $image"
  # shellcheck disable=SC2086  # DOCKER_BUILD_FLAGS is a list of flags
  if [ -n "${KONSPEKT_BUILD_LOG_DIR:-}" ]; then
    mkdir -p "$KONSPEKT_BUILD_LOG_DIR"
    log="$KONSPEKT_BUILD_LOG_DIR/$name.log"
    if ! docker build ${DOCKER_BUILD_FLAGS:-} "$@" -f "images/$name/Dockerfile" -t "$image" . >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "[images] $image FAILED after $(( $(date +%s) - start )) s (full log: $log)" >&2
      exit 1
    fi
  else
    docker build ${DOCKER_BUILD_FLAGS:-} "$@" -f "images/$name/Dockerfile" -t "$image" .
  fi
  echo "[images] $image: $(( $(date +%s) - start )) s"
done
echo "[images] all built in $(( $(date +%s) - total_start )) s"
