#!/bin/sh
# pip install into the image's venv, trusting images/common/extra-ca/ca-certificates.crt when present.
set -eu
if [ -f /opt/konspekt-build/extra-ca/ca-certificates.crt ]; then
  export PIP_CERT=/opt/konspekt-build/extra-ca/ca-certificates.crt
fi
exec /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-input "$@"
