#!/bin/sh
# install-lock.sh CHECK: a task image's dependencies, as every images/<family>/Dockerfile installs them.
# Installs /opt/konspekt-build/requirements.lock (the family's lock, COPYed there first) into the venv,
# then runs the Python code CHECK, which imports what the lock brought and prints its versions.
set -eu
[ "$#" -eq 1 ] || { echo "usage: install-lock.sh 'python code that checks the installed packages'" >&2; exit 2; }
/opt/konspekt-build/pip-install.sh -r /opt/konspekt-build/requirements.lock
exec /opt/venv/bin/python -c "$1"
