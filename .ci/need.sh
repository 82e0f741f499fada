#!/usr/bin/env bash
# Install the Debian package of each command this machine lacks (root); quiet unless apt fails.
#
#   .ci/need.sh LOG COMMAND=PACKAGE ...     e.g. .ci/need.sh /tmp/apt.log dockerd=docker.io chromium=chromium
set -euo pipefail
log=$1; shift
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
done
[ ${#missing[@]} -gt 0 ] || exit 0
mkdir -p "$(dirname "$log")"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$log" 2>&1 \
  || { tail -n 30 "$log"; exit 1; }
