#!/usr/bin/env bash
# The apache/airflow stand-in's /entrypoint, the parts of upstream's that konspekt uses:
#  - an arbitrary "<uid>:0" with no /etc/passwd entry gets one (home /home/airflow), so getpass works;
#  - "bash|sh|python|python3|/path ..." runs as it is; "airflow ..." runs as it is; anything else
#    runs as "airflow ..." (compose's `command: api-server`).
# Not implemented: _AIRFLOW_DB_MIGRATE, _AIRFLOW_WWW_USER_*, _PIP_ADDITIONAL_REQUIREMENTS and the
# wait-for-database loop (compose runs `airflow db migrate` itself).
set -euo pipefail
if ! whoami >/dev/null 2>&1; then
  if [ -w /etc/passwd ]; then
    echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" >>/etc/passwd
  fi
  export HOME="${AIRFLOW_USER_HOME_DIR}"
fi

case "${1:-}" in
  bash|sh|python|python3|/*|airflow) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
