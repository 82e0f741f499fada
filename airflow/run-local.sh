#!/usr/bin/env bash
# Run an Airflow command against this DAG bundle in local mode: no Docker, SQLite in airflow/home.
#   airflow/run-local.sh airflow dags test lecture_to_pdf
#   airflow/run-local.sh airflow standalone        # the UI on http://localhost:8080
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/airflow/home}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"  # the upload API at /konspekt (plugins/konspekt_api.py)
# konspekt_dags importable everywhere: the triggerer imports the watch folder's trigger by its path
export PYTHONPATH="$ROOT/dags${PYTHONPATH:+:$PYTHONPATH}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"   # the UI listens on loopback only
export KONSPEKT_RUNNER="${KONSPEKT_RUNNER:-local}"
# Task slots beyond the pools' (which bound the heavy stages to this machine's cores and memory), so
# the light tasks (the watcher's start of a run, claim, finalize) never wait behind stages: with 2,
# a new lecture's claim and a batch's finalize queued for a stage to end.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-8}"
# While stages load the cores, SQLite and the API server answer a task slower than Airflow's
# 5 s default, and a task that times out talking to it fails before it has started.
export AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="${AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT:-30}"
# Airflow settings shared with docker-compose.yml; what the environment sets already wins.
while IFS='=' read -r key value; do
  case "$key" in ''|'#'*) continue ;; esac
  [ -n "${!key+set}" ] || export "$key=$value"
done <"$ROOT/airflow/airflow.env"
mkdir -p "$AIRFLOW_HOME"
if [ ! -f "$AIRFLOW_HOME/airflow.db" ]; then
  airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
fi
# The pools the stage tasks queue for, sized from the KONSPEKT_* settings (a scheduler never
# starts a task whose pool is missing).
python -m konspekt_dags.pools >"$AIRFLOW_HOME/pools.log" 2>&1 \
  || { cat "$AIRFLOW_HOME/pools.log"; exit 1; }
exec "$@"
