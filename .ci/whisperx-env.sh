#!/usr/bin/env bash
# Create (or reuse) the whisperx venv and print its path on the last line of stdout.
#
#   .ci/whisperx-env.sh          create it if missing, then print its path
#   .ci/whisperx-env.sh --path   only print where it is (or would be); create nothing
#
# whisperx pins torch~=2.8.0 while the main venv has a newer CPU torch, so it gets its own
# venv outside the clone, keyed by requirements/whisperx.txt and the Python version: an
# unchanged key reuses it (bump "key-v1" to force a rebuild after editing the steps below).
# A fresh one downloads the CUDA build of torch with its nvidia-* wheels: about 7 min and
# 7.6 GB of disk here. Reuse costs about 2 s.
# Environment: KONSPEKT_CI_CACHE (default /var/cache/konspekt-ci), PYTHON (default python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
REQS="$ROOT/requirements/whisperx.txt"
KEY=$({ echo key-v1; cat "$REQS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
VENV="${KONSPEKT_CI_CACHE:-/var/cache/konspekt-ci}/venv-whisperx-$KEY"
if [ "${1:-}" = "--path" ]; then echo "$VENV"; exit 0; fi

if [ ! -f "$VENV/.installed" ]; then
  start=$(date +%s)
  echo "[whisperx-env] creating $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  # setuptools new enough for pyproject.toml, so the editable install below needs no network
  "$VENV/bin/pip" install -q --no-cache-dir --upgrade pip "setuptools==84.2.1" >&2
  "$VENV/bin/pip" install -q --no-cache-dir -r "$REQS" >&2
  "$VENV/bin/python" -c "import whisperx.asr, whisperx.alignment" >&2  # the backend's imports work
  touch "$VENV/.installed"
  echo "[whisperx-env] installed in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)" >&2
fi
# konspekt itself without its deps: the venv follows whichever clone called this script.
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
echo "$VENV"
