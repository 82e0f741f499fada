#!/usr/bin/env bash
# The stand-in OS image, with no registry: `debootstrap --variant=minbase bookworm` once, then
# `docker import` as konspekt-ci-debian:bookworm, also tagged debian:bookworm-slim (the default OS of
# images/base/Dockerfile) unless an image of that name already exists. Cached in /var/lib/docker: a
# rerun does nothing. Run as root (debootstrap). .ci/docker-e2e.sh (step 3) and .ci/standins/build.sh
# call it. (Not to be confused with konspekt-base:<tag>, the task images' shared base from images/base.)
#
#   .ci/standins/base.sh
#     KONSPEKT_CI_BASE_IMAGE     the image to build (default konspekt-ci-debian:bookworm)
#     KONSPEKT_CI_DEBIAN_MIRROR  the Debian mirror (default: the first one this machine's apt uses)
#     KONSPEKT_CI_SLIM_TAG       the second tag, "" for none (default debian:bookworm-slim)
#     KONSPEKT_STANDINS_LOG_DIR  where debootstrap.log goes (default /var/cache/konspekt-ci/logs)
set -euo pipefail
BASE_IMAGE="${KONSPEKT_CI_BASE_IMAGE:-konspekt-ci-debian:bookworm}"
LEGACY_IMAGE=konspekt-base:bookworm  # this image's name before images/base took konspekt-base
SLIM_TAG="${KONSPEKT_CI_SLIM_TAG-debian:bookworm-slim}"
LOG_DIR="${KONSPEKT_STANDINS_LOG_DIR:-${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}/logs}"
log() { echo "[standins] $*"; }

# A machine that imported it under the old name keeps it (and every layer cached on top of it): the
# imported rootfs is the only image of one layer there.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    && [ "$(docker image inspect -f '{{len .RootFS.Layers}}' "$LEGACY_IMAGE" 2>/dev/null)" = 1 ]; then
  docker tag "$LEGACY_IMAGE" "$BASE_IMAGE" && docker rmi "$LEGACY_IMAGE" >/dev/null
  log "renamed $LEGACY_IMAGE to $BASE_IMAGE"
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "OS image $BASE_IMAGE exists"
else
  # The Debian mirror this machine's apt already uses (first URIs line of its sources).
  DEBIAN_MIRROR="${KONSPEKT_CI_DEBIAN_MIRROR:-$(grep -hm1 -oP '^URIs:\s*\K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null || awk '/^deb /{print $2; exit}' /etc/apt/sources.list)}"
  [ -n "$DEBIAN_MIRROR" ] || { echo "[standins] no Debian mirror found (set KONSPEKT_CI_DEBIAN_MIRROR)" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "[standins] debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  mkdir -p "$LOG_DIR"
  rootfs=$(mktemp -d /var/tmp/konspekt-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm ($DEBIAN_MIRROR) -> $BASE_IMAGE"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$LOG_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$LOG_DIR/debootstrap.log" >&2; exit 1; }
  # Like debian:bookworm-slim: no package cache or lists, the same apt sources.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  rm -f "$rootfs"/etc/apt/sources.list
  cat >"$rootfs"/etc/apt/sources.list.d/debian.sources <<SOURCES
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
fi

if [ -n "$SLIM_TAG" ] && [ "$SLIM_TAG" != "$BASE_IMAGE" ]; then
  if docker image inspect "$SLIM_TAG" >/dev/null 2>&1; then
    log "$SLIM_TAG exists (left as it is)"
  else
    docker tag "$BASE_IMAGE" "$SLIM_TAG"
    log "tagged $BASE_IMAGE as $SLIM_TAG"
  fi
fi
