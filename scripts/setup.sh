#!/usr/bin/env bash
# Prepare this machine to build, test and run Switchboard.
#
# Idempotent: a second run only checks and returns within a second or two.
# Expects Debian bookworm and root (as on the dev machines and CI).
#   - pgvector for the machine's PostgreSQL (built from Debian's source tarball)
#   - PostgreSQL, Redis and RabbitMQ installed and running on 127.0.0.1
#   - the Rust toolchain present
#   - database `switchboard` present; leftover test databases (sb_test_*) dropped
#   - the browser client built (npm packages, scripts/build-web.sh) and Chromium +
#     chromedriver for its browser tests
# The application runs its own migrations (`switchboard migrate` / on `serve`).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PG_HOST=127.0.0.1
PG_USER=postgres
DB_NAME=${DB_NAME:-switchboard}
WAIT_SECONDS=${WAIT_SECONDS:-60}

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  die "run as root (installs packages and starts services)"
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    apt-get update -q
    apt_updated=1
  fi
  apt-get install -y -q "$@"
}

# wait_for NAME CHECK-COMMAND...: poll once a second for up to WAIT_SECONDS
wait_for() {
  local name=$1; shift
  local i
  for ((i = 0; i < WAIT_SECONDS; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$name did not come up within ${WAIT_SECONDS}s"
}

pg_up()       { pg_isready -q -h "$PG_HOST"; }
redis_up()    { [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = "PONG" ]; }
rabbitmq_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

# --- 1. packages that are missing entirely --------------------------------------
missing=()
command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /usr/lib/postgresql ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_install "${missing[@]}"
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    # A fresh Debian cluster wants passwords over TCP; the project expects trust
    # auth for user postgres on loopback (as on the dev machines and CI).
    hba=/etc/postgresql/$(ls /etc/postgresql | sort -n | tail -1)/main/pg_hba.conf
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -1)" main reload 2>/dev/null || true
  fi
fi

# --- 2. pgvector ------------------------------------------------------------------
# Recipe: shared/recipes/pgvector.md. Debian's own source tarball of pgvector 0.8.0
# (from the apt mirror already configured) builds cleanly against bookworm's PG 15.
pg_major=$(ls /usr/lib/postgresql | sort -n | tail -1)
control=/usr/share/postgresql/$pg_major/extension/vector.control
if [ -f "$control" ]; then
  log "pgvector: already installed for PostgreSQL $pg_major"
else
  log "pgvector: installing for PostgreSQL $pg_major"
  started=$SECONDS
  apt-get update -q
  apt_updated=1
  # The dev package may pull a newer point release of postgresql-$pg_major, and that
  # upgrade STOPS the running cluster. A policy-rc.d that denies service actions keeps
  # the running server up. If the machine already has one (Docker-style images do),
  # keep it as it is; otherwise add ours and remove it again afterwards.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get install -y -q "postgresql-server-dev-$pg_major" make gcc curl ca-certificates
  if [ "$own_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  curl -fsSL -o "$work/pgvector.tar.gz" \
    "$mirror/pool/main/p/pgvector/pgvector_0.8.0.orig.tar.gz"
  echo "867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0  $work/pgvector.tar.gz" \
    | sha256sum -c -
  tar -xzf "$work/pgvector.tar.gz" -C "$work"
  # OPTFLAGS="" keeps the build portable (no -march=native)
  pg_config=/usr/lib/postgresql/$pg_major/bin/pg_config
  make -s -C "$work/pgvector-0.8.0" OPTFLAGS="" PG_CONFIG="$pg_config"
  make -s -C "$work/pgvector-0.8.0" install PG_CONFIG="$pg_config"
  [ -f "$control" ] || die "pgvector: $control still missing after install"
  log "pgvector: installed in $((SECONDS - started))s"
fi

# --- 3. services ------------------------------------------------------------------
if pg_up; then
  log "postgresql: running"
else
  cluster_ver=$(ls /etc/postgresql | sort -n | tail -1)
  log "postgresql: starting cluster $cluster_ver/main"
  pg_ctlcluster --skip-systemctl-redirect "$cluster_ver" main start || true
  wait_for postgresql pg_up
  log "postgresql: up"
fi

if redis_up; then
  log "redis: running"
else
  log "redis: starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis redis_up
  log "redis: up"
fi

if rabbitmq_up; then
  log "rabbitmq: running"
else
  log "rabbitmq: starting (can take ~10-20s)"
  rabbitmq-server -detached || true
  wait_for rabbitmq rabbitmq_up
  log "rabbitmq: up"
fi

# --- 4. Rust toolchain ------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if command -v cargo >/dev/null 2>&1; then
  log "rust: cargo at $(command -v cargo)"
else
  die "cargo not found (not on PATH, no \$HOME/.cargo/env). Install the Rust toolchain with rustup."
fi

# --- 5. databases -----------------------------------------------------------------
psql_q() { psql -h "$PG_HOST" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -Atqc "$1"; }

if [ "$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" = "1" ]; then
  log "database $DB_NAME: present"
else
  log "database $DB_NAME: creating"
  psql_q "CREATE DATABASE \"$DB_NAME\""
fi

# Each test creates its own sb_test_* database; drop any left behind by crashed runs.
# Without FORCE: a database still in use (a test run going on beside this one) stays.
mapfile -t leftovers < <(psql_q "SELECT datname FROM pg_database WHERE datname LIKE 'sb\_test\_%'")
if [ "${#leftovers[@]}" -gt 0 ]; then
  log "dropping ${#leftovers[@]} leftover test database(s)"
  for db in "${leftovers[@]}"; do
    [ -n "$db" ] || continue
    psql_q "DROP DATABASE IF EXISTS \"${db//\"/\"\"}\"" >/dev/null 2>&1 || true
  done
fi

# --- 6. the official OpenAI SDK, for the compatibility test -------------------------
# A venv of the project's own (PyPI), so nothing is installed system-wide.
# LangChain's OpenAI integration too (tests/api/sdk_compat.rs).
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv-tests"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import openai, langchain_openai' >/dev/null 2>&1; then
  log "openai SDK and langchain-openai for tests: present"
else
  log "openai SDK and langchain-openai for tests: installing into .venv-tests"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'openai>=1.92,<2' 'langchain-openai==1.1.9'
fi

# --- 6b. the Node SDKs (openai, the Vercel AI SDK), pinned by tests/sdk/node/package-lock.json
sdk_node="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/sdk/node"
command -v npm >/dev/null 2>&1 || die "npm not found (Node 20 + npm are required)"
sdk_stamp="$sdk_node/node_modules/.lock-sha256"
sdk_lock=$(sha256sum "$sdk_node/package-lock.json" | cut -d' ' -f1)
if [ -f "$sdk_stamp" ] && [ "$(cat "$sdk_stamp")" = "$sdk_lock" ]; then
  log "Node SDKs for tests: up to date"
else
  log "Node SDKs for tests: installing (npm ci)"
  (cd "$sdk_node" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$sdk_lock" > "$sdk_stamp"
fi
# The OpenAPI document's validator and the schema-driven fuzzer (tests/api/openapi_fuzz.rs).
if "$venv/bin/python" -c 'import openapi_spec_validator, schemathesis' >/dev/null 2>&1; then
  log "openapi-spec-validator and schemathesis: present"
else
  log "openapi-spec-validator and schemathesis: installing into .venv-tests"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'openapi-spec-validator>=0.7,<0.8' 'schemathesis>=3.39,<4' 'hypothesis>=6.108,<6.120'
fi

# --- 7. the browser client: npm packages, and Chromium for its browser tests --------
# web/ is plain ES modules; npm only fetches marked, DOMPurify and highlight.js
# (pinned by web/package-lock.json) and scripts/build-web.sh copies them into web/assets/vendor/.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  log "chromium: $(chromium --version 2>/dev/null | head -1)"
else
  log "chromium: installing (headless browser tests)"
  apt_install chromium chromium-driver
fi
bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/build-web.sh"

# --- 8. promtool, for the alert-rule tests (docker/prometheus) ----------------------
# Only the promtool binary from Debian's prometheus package: installing the
# package would also start a Prometheus server on this machine.
if command -v promtool >/dev/null 2>&1; then
  log "promtool: present"
else
  log "promtool: extracting from Debian's prometheus package"
  if [ "$apt_updated" -eq 0 ]; then apt-get update -q; apt_updated=1; fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q prometheus >/dev/null &&
    dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool) ||
    die "could not fetch promtool (apt-get download prometheus)"
  install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
  promtool --version >/dev/null || die "promtool does not run"
fi


log "done"
