#!/bin/sh
# The docker:28-cli stand-in's entrypoint, as upstream: `docker run IMAGE version` or
# `docker run IMAGE -H ... ps` runs the docker client; anything else (sh, ...) is exec'd as it is.
set -eu
if [ "$#" -eq 0 ]; then
  set -- sh
elif [ "${1#-}" != "$1" ]; then
  set -- docker "$@"
elif [ "$1" != docker ] && ! command -v "$1" >/dev/null 2>&1 && docker help "$1" >/dev/null 2>&1; then
  set -- docker "$@"
fi
exec "$@"
