#!/usr/bin/env bash
# The compose stack on this machine, for a person (make compose-up / compose-down) and for CI
# (.ci/compose-e2e.sh). It runs the project's own docker-compose.yml unchanged.
#
#   airflow/compose.sh up       stand-ins for images no registry can give, a .env if there is none,
#                               the stack up and healthy; prints the UI's URL and the admin user
#   airflow/compose.sh env      only write .env (when there is none); add the secrets an older .env lacks
#   airflow/compose.sh down     stop and remove the containers (volumes kept: images, database)
#   airflow/compose.sh purge    ... and the volumes too
#   airflow/compose.sh ps|logs  passed to compose
#
# Environment (all optional):
#   KONSPEKT_STANDINS        auto (default: build a stand-in only for an image that cannot be pulled),
#                            always (CI: never try a registry), never
#   KONSPEKT_COMPOSE_FILES   extra compose files (-f), e.g. .ci/standins/compose.ci.yml where
#                            docker-proxy cannot run privileged
#   KONSPEKT_TORCH_WHEELS    a folder of local torch wheels to build the torch images from
#                            (default /opt/wheels when it holds one); .env then gets KONSPEKT_TORCH_INDEX_URL=none
#   PIP_CERT                 a CA bundle pip must trust in image builds (TLS-inspecting proxies)
#   KONSPEKT_WORKERS         the celery profile's workers (--scale worker=N; default 1), also read from .env
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
say() { echo "[compose] $*"; }

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE+=(-f docker-compose.yml)
for extra in ${KONSPEKT_COMPOSE_FILES:-}; do COMPOSE+=(-f "$extra"); done
compose() {  # COMPOSE_PROFILES from the environment, else .env's (each compose version reads it differently)
  COMPOSE_PROFILES="${COMPOSE_PROFILES:-$(env_value COMPOSE_PROFILES)}" "${COMPOSE[@]}" "$@"
}

env_value() {  # the value of $1 in .env (the last assignment wins, as for compose)
  sed -n "s/^$1=//p" .env 2>/dev/null | tail -n 1
}

secret() {  # a random secret safe in a URL (letters, digits, - and _): Redis's goes into the broker URL
  python3 -c 'import secrets; print(secrets.token_urlsafe(18))'
}

# The secrets compose takes from .env and has no default for: a value of its own each.
GENERATED_SECRETS=(AIRFLOW_ADMIN_PASSWORD REDIS_PASSWORD REGISTRY_PASSWORD)

write_env() {
  local fernet name
  fernet=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
  local args=(-e "s/^AIRFLOW_UID=.*/AIRFLOW_UID=$(id -u)/" -e "s/^AIRFLOW_FERNET_KEY=.*/AIRFLOW_FERNET_KEY=$fernet/")
  for name in "${GENERATED_SECRETS[@]}"; do args+=(-e "s/^$name=.*/$name=$(secret)/"); done
  (umask 077 && sed "${args[@]}" .env.example >.env)
  [ "$(id -u)" != 0 ] || sed -i "s/^AIRFLOW_UID=.*/AIRFLOW_UID=50000/" .env  # root: the image's own user
  chmod 600 .env
  say "wrote .env (admin ${AIRFLOW_ADMIN_USER:-konspekt}, a new random password: see AIRFLOW_ADMIN_PASSWORD in .env)"
}

add_missing_secrets() {  # an .env written before a secret existed (REDIS_PASSWORD, ...) gets one; set ones are kept
  local name added=()
  for name in REDIS_PASSWORD REGISTRY_PASSWORD; do
    [ -z "$(env_value "$name")" ] || continue
    if grep -q "^$name=" .env; then sed -i "s/^$name=.*/$name=$(secret)/" .env; else echo "$name=$(secret)" >>.env; fi
    added+=("$name")
  done
  [ ${#added[@]} -eq 0 ] || say "added to .env: ${added[*]} (random)"
}

local_torch_wheels() {  # link local torch wheels into images/wheels/ (git-ignored); 0 when there were any
  local dir=${KONSPEKT_TORCH_WHEELS:-/opt/wheels} found=1
  shopt -s nullglob
  for wheel in "$dir"/torch-*.whl; do
    [ -e "images/wheels/$(basename "$wheel")" ] || ln "$wheel" images/wheels/ 2>/dev/null || cp "$wheel" images/wheels/
    found=0
  done
  shopt -u nullglob
  return $found
}

wait_healthy() {  # wait_healthy SERVICE SECONDS: every container of it (a scaled service has several)
  local ids state waited=0
  while :; do
    ids=$(compose ps -q "$1" 2>/dev/null || true)
    state=missing
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086  # one id a word
      state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $ids 2>/dev/null \
              | sort -u | paste -sd, || echo missing)
    fi
    [ "$state" = healthy ] && return 0
    if [ "$waited" -ge "$2" ]; then
      say "$1 is $state after $2 s"; compose logs --tail 60 "$1" >&2 || true; return 1
    fi
    sleep 3; waited=$((waited + 3))
  done
}

celery_profile() {  # whether the celery profile is on (COMPOSE_PROFILES from the environment or .env)
  case ",${COMPOSE_PROFILES:-$(env_value COMPOSE_PROFILES)}," in *,celery,*) return 0 ;; *) return 1 ;; esac
}

up() {
  docker info >/dev/null 2>&1 || { say "no Docker daemon answers (${DOCKER_HOST:-the default socket}): start Docker first"; exit 1; }
  [ -f .env ] || write_env
  add_missing_secrets
  local scale=()
  if celery_profile; then
    local executor workers
    executor=${AIRFLOW_EXECUTOR:-$(env_value AIRFLOW_EXECUTOR)}
    if [ "$executor" != CeleryExecutor ]; then
      say "the celery profile is on, but AIRFLOW_EXECUTOR is '${executor:-LocalExecutor}': set AIRFLOW_EXECUTOR=CeleryExecutor in .env"
      exit 1
    fi
    workers=${KONSPEKT_WORKERS:-$(env_value KONSPEKT_WORKERS)}
    workers=${workers:-1}
    case "$workers" in ''|*[!0-9]*|0) say "KONSPEKT_WORKERS=$workers: a number of workers, 1 or more"; exit 1 ;; esac
    scale=(--scale "worker=$workers")
    say "celery profile: $workers worker(s), each with its own Docker engine"
  fi
  if local_torch_wheels && [ -z "$(env_value KONSPEKT_TORCH_INDEX_URL)" ]; then
    printf '%s\n' "# torch from images/wheels/ (airflow/compose.sh found local wheels there)" \
      "KONSPEKT_TORCH_INDEX_URL=none" >>.env
  fi
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then  # pip in image builds trusts it (git-ignored)
    cp "$PIP_CERT" images/common/extra-ca/ca-certificates.crt
  fi
  mkdir -p cache airflow/logs airflow/config

  local t=$(date +%s)
  KONSPEKT_STANDINS=${KONSPEKT_STANDINS:-auto} bash .ci/standins/build.sh
  say "images compose starts from: $(( $(date +%s) - t )) s"

  # docker-proxy first: the task images build inside it from debian:bookworm-slim. Where no registry
  # answers, it gets the local (stand-in) copy instead of a pull.
  t=$(date +%s)
  compose up -d docker-proxy
  wait_healthy docker-proxy 180
  if ! compose exec -T docker-proxy docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
     && docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    say "loading debian:bookworm-slim into docker-proxy"
    docker save debian:bookworm-slim | compose exec -T docker-proxy docker load >/dev/null
  fi
  say "docker-proxy healthy: $(( $(date +%s) - t )) s"

  # The rest; compose waits for image-builder and models before it starts the scheduler.
  t=$(date +%s)
  if ! compose up -d --build "${scale[@]}"; then
    say "the stack did not come up; the one-shot services say why:"
    compose logs --tail 40 airflow-init image-builder models >&2 || true
    ! celery_profile || compose logs --tail 40 image-publisher worker >&2 || true
    exit 1
  fi
  local services=(airflow-apiserver airflow-scheduler airflow-dag-processor airflow-triggerer)
  ! celery_profile || services+=(worker)
  for service in "${services[@]}"; do
    wait_healthy "$service" 300
  done
  say "stack healthy: $(( $(date +%s) - t )) s (total $(( $(date +%s) - START )) s)"
  compose ps
  local port bind
  port=$(env_value AIRFLOW_UI_PORT); bind=$(env_value AIRFLOW_UI_BIND)
  say "UI: http://${bind:-127.0.0.1}:${port:-8080}  user: $(env_value AIRFLOW_ADMIN_USER || true)  (password: AIRFLOW_ADMIN_PASSWORD in .env)"
  say "drop videos into airflow/data/input/; results in airflow/data/output/"
}

case "${1:-}" in
  up) up ;;
  env) [ -f .env ] || write_env; add_missing_secrets ;;
  down) COMPOSE_PROFILES=celery,gpu,tools compose down --remove-orphans ;;  # every profile's containers
  purge)  # a fresh start: the database (with whatever its Fernet key encrypted) and the images go too
    COMPOSE_PROFILES=celery,gpu,tools compose down --remove-orphans --volumes
    say "deleted the stack's volumes (database, docker-proxy's and the registry's images); airflow/data and cache are kept" ;;
  ps|logs) compose "$@" ;;
  *) echo "usage: $0 up|down|purge|ps|logs" >&2; exit 2 ;;
esac
