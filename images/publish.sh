#!/bin/sh
# Push the task images built by images/build.sh to a registry, for workers with engines of their own
# (the celery profile: docker-compose.yml `image-publisher`; a cluster: your registry).
#
#   KONSPEKT_REGISTRY=registry:5000 images/publish.sh            every task image family
#   KONSPEKT_REGISTRY=registry.example.edu/lectures images/publish.sh asr
#
# <prefix>-<family>:<tag> (as build.sh names them) is tagged and pushed as
# $KONSPEKT_REGISTRY/<prefix>-<family>:<tag>, the name the workers' tasks run
# (their KONSPEKT_IMAGE_PREFIX is $KONSPEKT_REGISTRY/<prefix>). Layers the registry has are not sent again.
# With REGISTRY_PASSWORD set, it logs in first as REGISTRY_USER (the compose registry asks for a login).
# POSIX sh: the compose image-publisher runs it in the docker:cli image.
set -eu
cd "$(dirname "$0")/.."
registry=${KONSPEKT_REGISTRY:?set KONSPEKT_REGISTRY: the registry (host[:port][/path]) the workers pull from}
prefix=${KONSPEKT_IMAGE_PREFIX:-konspekt}
tag=${KONSPEKT_IMAGE_TAG:-latest}
names=${*:-$(sh images/families.sh)}  # the families asked for, else every one

# A login and a push are retried for up to 2 minutes: the registry may still be starting.
start=$(date +%s)
if [ -n "${REGISTRY_PASSWORD:-}" ]; then
  tries=0
  until printf '%s' "$REGISTRY_PASSWORD" | docker login --username "${REGISTRY_USER:-konspekt}" --password-stdin \
          "${registry%%/*}" >/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 24 ] || { echo "[publish] could not log in to ${registry%%/*} as ${REGISTRY_USER:-konspekt}" >&2; exit 1; }
    sleep 5
  done
fi
for family in $names; do
  image="$prefix-$family:$tag"
  docker image inspect "$image" >/dev/null 2>&1 \
    || { echo "[publish] $image is not built here: run images/build.sh first" >&2; exit 1; }
  target="$registry/$image"
  docker tag "$image" "$target"
  tries=0
  until docker push "$target" >/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 24 ] || { echo "[publish] could not push $target" >&2; exit 1; }
    sleep 5
  done
  echo "[publish] $target"
done
echo "[publish] pushed in $(( $(date +%s) - start )) s"
