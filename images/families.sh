#!/bin/sh
# The task image families, one per line: every images/<name>/Dockerfile but airflow's (compose's own
# build) and base's (what the families build FROM). build.sh and publish.sh take these by default.
cd "$(dirname "$0")/.."
for dockerfile in images/*/Dockerfile; do
  name=$(basename "$(dirname "$dockerfile")")
  [ "$name" = airflow ] || [ "$name" = base ] || echo "$name"
done
