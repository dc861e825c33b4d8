#!/usr/bin/env bash
# The standard benchmark set: builds Switchboard and the load generator in
# release mode, runs the server on loopback with raised plan limits, drives it
# with loadtest/ (WebSocket chat, idle connections, REST, the OpenAI-compatible
# API, and a mock OpenAI provider), and regenerates docs/BENCHMARKS.md from the
# JSON results. Every run is bounded in count and time; traffic stays on 127.0.0.0/8.
#
# Needs PostgreSQL, Redis and RabbitMQ up (`make bench` runs scripts/setup.sh first).
# Uses its own database (switchboard_bench, dropped and recreated per phase) and Redis key
# prefix (sbbench), so it leaves the development data alone.
#
# Knobs (environment):
#   BENCH_PORT=18080 BENCH_MOCK_PORT=18090   ports on 127.0.0.1
#   BENCH_PROFILE=release                    or debug, for trying the script out
#   BENCH_QUICK=1                            small sizes, for trying the script out
#   BENCH_CONNECTIONS=19000                  sockets held by the `connections` run
#   BENCH_RUST_LOG=                          the server's RUST_LOG (empty: its default, info)
#   BENCH_NO_REPORT=1                        keep docs/BENCHMARKS.md as it is
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

PORT=${BENCH_PORT:-18080}
MOCK_PORT=${BENCH_MOCK_PORT:-18090}
PROFILE=${BENCH_PROFILE:-release}
QUICK=${BENCH_QUICK:-0}
CONNECTIONS=${BENCH_CONNECTIONS:-19000}
DB=switchboard_bench
PREFIX=sbbench
URL="http://127.0.0.1:$PORT"
started=$SECONDS

log() { printf '[bench %3ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 0. preconditions ----------------------------------------------------------------
pg_isready -q -h 127.0.0.1 || die "PostgreSQL is not up on 127.0.0.1 (run: make setup)"
[ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = "PONG" ] || die "Redis is not up (run: make setup)"
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || die "RabbitMQ is not up (run: make setup)"
for p in "$PORT" "$((PORT + 1))" "$((PORT + 2))" "$MOCK_PORT" "$((MOCK_PORT + 1))"; do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$p (set BENCH_PORT / BENCH_MOCK_PORT)"
  fi
done

# Sockets: one descriptor each, in the server and in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
if [ "$fd_limit" != unlimited ] && [ "$CONNECTIONS" -gt $((fd_limit - 500)) ]; then
  log "open-files limit is $fd_limit: holding $((fd_limit - 500)) sockets instead of $CONNECTIONS"
  CONNECTIONS=$((fd_limit - 500))
fi

if [ "$QUICK" = 1 ]; then
  WS_USERS=20 WS_MSGS=3 WS1K_USERS=100 WS1K_SECS=5 CONNECTIONS=300 HTTP_C=10 HTTP_SECS=4
  OAI_C=10 OAI_SECS=4 TP_USERS=60 TP_SECS=4 OAI_TP_C=30
  ACK_RATE=200 ACK_USERS=40 REAL_C=100 CL_USERS=30 CL_SECS=4
else
  WS_USERS=100 WS_MSGS=5 WS1K_USERS=1000 WS1K_SECS=20 HTTP_C=50 HTTP_SECS=15
  OAI_C=50 OAI_SECS=15 TP_USERS=500 TP_SECS=15 OAI_TP_C=200
  ACK_RATE=1000 ACK_USERS=200 REAL_C=1000 CL_USERS=150 CL_SECS=20
fi
REAL_MOCK_PORT=$((MOCK_PORT + 1))

# --- 1. build ------------------------------------------------------------------------
log "building ($PROFILE): switchboard, switchboard-loadtest"
build_started=$SECONDS
if [ "$PROFILE" = release ]; then build_flag="--release "; BIN=target/release; else build_flag=""; BIN=target/debug; fi
# shellcheck disable=SC2086
cargo build $build_flag-p switchboard -p switchboard-loadtest
build_secs=$((SECONDS - build_started))
LOADTEST="$BIN/loadtest"

# --- 2. a clean database and Redis prefix of our own ------------------------------
psql_q() { psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -Atqc "$1"; }
# fresh_state: an empty database and Redis prefix, so a phase does not start by
# answering what the last one left queued (the open-loop run ends with a backlog).
# Every phase's server starts on one (start_server, below).
fresh_state() {
  psql_q "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql_q "CREATE DATABASE $DB" >/dev/null
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null
}

RESULTS="loadtest/results/bench-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
ln -sfn "$(basename "$RESULTS")" loadtest/results/latest
log "results in $RESULTS"

# --- 3. the server ---------------------------------------------------------------------
SERVER_PID=
MOCK_PID=
NODE_PIDS=()
cleanup() {
  for pid in "${NODE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$MOCK_PID" ] && kill -0 "$MOCK_PID" 2>/dev/null; then
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# Every plan tier gets limits no run reaches (tiers must stay ordered free ≤ pro ≤ team).
limits_env=()
for tier in FREE PRO TEAM; do
  limits_env+=(
    "SWITCHBOARD_PLANS__${tier}__MESSAGES_PER_MINUTE=100000000"
    "SWITCHBOARD_PLANS__${tier}__TOKENS_PER_MINUTE=1000000000"
    "SWITCHBOARD_PLANS__${tier}__DAILY_BUDGET_MICROS=1000000000000"
    "SWITCHBOARD_PLANS__${tier}__MONTHLY_BUDGET_MICROS=10000000000000"
  )
done
limits_env+=(
  "SWITCHBOARD_PLANS__TEAM__USER_DAILY_BUDGET_MICROS=1000000000000"
  "SWITCHBOARD_PLANS__TEAM__USER_MONTHLY_BUDGET_MICROS=10000000000000"
  # every simulated user signs up and in from 127.0.0.1
  "SWITCHBOARD_AUTH__SIGNUP_MAX_PER_IP=100000000"
  "SWITCHBOARD_AUTH__SIGNUP_MAX_GLOBAL=100000000"
  "SWITCHBOARD_AUTH__SIGNIN_MAX_PER_IP=100000000"
  "SWITCHBOARD_AUTH__SIGNIN_MAX_PER_EMAIL=100000000"
  # and every socket comes from 127.0.0.x: the edge's per-node and per-address caps
  "SWITCHBOARD_EDGE__MAX_CONNECTIONS=40000"
  "SWITCHBOARD_EDGE__MAX_CONNECTIONS_PER_IP=40000"
  "SWITCHBOARD_EDGE__MAX_UNAUTHENTICATED_WS=40000"
  "SWITCHBOARD_EDGE__MAX_SSE_STREAMS_PER_USER=100000"
)

# The server's own default filter unless BENCH_RUST_LOG says otherwise.
log_env=(-u RUST_LOG)
if [ -n "${BENCH_RUST_LOG:-}" ]; then log_env=("RUST_LOG=$BENCH_RUST_LOG"); fi

# launch NAME PORT VAR=VALUE...: starts a server process on PORT with these
# settings and waits for its /ready; its pid is left in LAUNCHED.
launch() {
  local name=$1 port=$2; shift 2
  local logfile="$RESULTS/server-$name.log"
  env "${log_env[@]}" APP_ENV=development HOST=127.0.0.1 PORT="$port" \
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
    SWITCHBOARD_REDIS__KEY_PREFIX="$PREFIX" \
    "${limits_env[@]}" "$@" \
    "$BIN/switchboard" serve >"$logfile" 2>&1 &
  LAUNCHED=$!
  local i
  for ((i = 0; i < 120; i++)); do
    if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then
      log "server ($name) ready on port $port, pid $LAUNCHED"
      return 0
    fi
    kill -0 "$LAUNCHED" 2>/dev/null || { tail -20 "$logfile" >&2; die "the server exited; see $logfile"; }
    sleep 0.5
  done
  die "the server did not become ready in 60 s; see $logfile"
}

# start_server NAME VAR=VALUE...: the server on $PORT, on a fresh database.
start_server() {
  local name=$1; shift
  fresh_state
  launch "$name" "$PORT" "$@"
  SERVER_PID=$LAUNCHED
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# lt NAME SCENARIO ARGS...: one run; a failed run is recorded and the set goes on.
lt() {
  local name=$1 scenario=$2; shift 2
  log "run $name ($scenario $*)"
  "$LOADTEST" "$scenario" --url "$URL" --server-pid "$SERVER_PID" --label "$name" \
    --out "$RESULTS/$name.json" "$@" || log "run $name did not complete (recorded in $RESULTS/$name.json)"
}

# --- 4. latency: the simulated provider, 50 ms TTFT, then 40 tokens 20 ms apart ---------
SIM_TTFT=50
start_server simulated \
  SWITCHBOARD_SIMULATED__TTFT_MS=$SIM_TTFT SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS=20 \
  SWITCHBOARD_SIMULATED__REPLY_TOKENS=40
lt ws-chat-100x5 ws-chat --users "$WS_USERS" --messages "$WS_MSGS" --duration 60 \
  --provider-ttft-ms $SIM_TTFT
lt ws-chat-1k ws-chat --users "$WS1K_USERS" --per-account 30 --messages 1000 \
  --duration "$WS1K_SECS" --ramp-ms 2000 --provider-ttft-ms $SIM_TTFT
lt ws-chat-1k-cold ws-chat --users "$WS1K_USERS" --per-account 30 --messages 3 --cold \
  --duration "$WS1K_SECS" --ramp-ms 2000 --provider-ttft-ms $SIM_TTFT
lt connections connections --connections "$CONNECTIONS" --per-account 30 --hold-secs 10 --duration 120
lt http-50 http --concurrency "$HTTP_C" --duration "$HTTP_SECS"
# Open loop: 40 sign-ins a second over 40 accounts, each timed from its intended start.
lt signin-open-40 http --signin-rate 40 --concurrency 40 --duration "$HTTP_SECS"
lt openai-50 openai --concurrency "$OAI_C" --duration "$OAI_SECS" --provider-ttft-ms $SIM_TTFT
stop_server

# --- 5. throughput: short answers (10 tokens, 1 ms apart, same 50 ms TTFT) ------------------
start_server throughput \
  SWITCHBOARD_SIMULATED__TTFT_MS=$SIM_TTFT SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS=1 \
  SWITCHBOARD_SIMULATED__REPLY_TOKENS=10
lt ws-chat-throughput ws-chat --users "$TP_USERS" --per-account 30 --messages 100000 \
  --duration "$TP_SECS" --ramp-ms 1000 --provider-ttft-ms $SIM_TTFT
lt openai-throughput openai --concurrency "$OAI_TP_C" --duration "$TP_SECS" --provider-ttft-ms $SIM_TTFT
# Open loop: a fixed arrival rate; ack latency from each message's intended send time.
lt ws-ack-open-1k ws-chat --users "$ACK_USERS" --per-account 30 --rate "$ACK_RATE" \
  --messages 100000 --duration "$TP_SECS" --provider-ttft-ms $SIM_TTFT
stop_server

# --- 5b. server CPU per streamed /v1 completion of 20 tokens ----------------------------
start_server cpu \
  SWITCHBOARD_SIMULATED__TTFT_MS=$SIM_TTFT SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS=1 \
  SWITCHBOARD_SIMULATED__REPLY_TOKENS=20
lt openai-cpu openai --concurrency "$OAI_C" --duration "$OAI_SECS" --provider-ttft-ms $SIM_TTFT
stop_server

# --- 6. a real HTTP provider: the mock OpenAI server, 50 ms TTFT ------------------------
"$LOADTEST" mock-openai --port "$MOCK_PORT" --ttft-ms 50 --tokens 40 --token-delay-ms 20 \
  --max-secs 600 >"$RESULTS/mock-openai.log" 2>&1 &
MOCK_PID=$!
start_server mock-openai \
  OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" OPENAI_API_KEY=bench-not-a-secret \
  LLM_PROVIDER_FREE_TIER=openai LLM_PROVIDER_PAID_TIER=openai \
  SWITCHBOARD_PROVIDERS__LIMITS__DEFAULT__CONCURRENCY=100000
lt ws-chat-mock-openai ws-chat --users "$WS_USERS" --messages "$WS_MSGS" --duration 60 \
  --provider-ttft-ms 50
# /v1 against the bare mock and through Switchboard, side by side in one run each.
for c in 10 100; do
  lt "openai-vs-mock-$c" openai --concurrency "$c" --duration "$OAI_SECS" --model gpt-4o-mini \
    --provider-ttft-ms 50 --compare-direct "http://127.0.0.1:$MOCK_PORT/v1"
done
stop_server
kill -TERM "$MOCK_PID" 2>/dev/null || true
wait "$MOCK_PID" 2>/dev/null || true
MOCK_PID=

# --- 6b. the realistic profile: first token after 200 ms, 50 tokens 10 ms apart ------------
"$LOADTEST" mock-openai --port "$REAL_MOCK_PORT" --ttft-ms 200 --tokens 50 --token-delay-ms 10 \
  --max-secs 600 >"$RESULTS/mock-openai-realistic.log" 2>&1 &
MOCK_PID=$!
start_server realistic \
  OPENAI_BASE_URL="http://127.0.0.1:$REAL_MOCK_PORT/v1" OPENAI_API_KEY=bench-not-a-secret \
  LLM_PROVIDER_FREE_TIER=openai LLM_PROVIDER_PAID_TIER=openai \
  SWITCHBOARD_PROVIDERS__LIMITS__DEFAULT__CONCURRENCY=100000
lt openai-realistic-1k openai --concurrency "$REAL_C" --duration "$OAI_SECS" --model gpt-4o-mini \
  --provider-ttft-ms 200 --compare-direct "http://127.0.0.1:$REAL_MOCK_PORT/v1"
stop_server
kill -TERM "$MOCK_PID" 2>/dev/null || true
wait "$MOCK_PID" 2>/dev/null || true
MOCK_PID=

# --- 6c. cluster: one node, then three, on this machine --------------------------------
# The same closed-loop chat load on one node and on three server processes that
# share PostgreSQL, Redis and these two cores; each user also follows its chat
# from a second socket on the next node (--watch), so `watch_ttft` is what a
# client of another node sees (on one node: of the same node). 15 users per
# account: each has two sockets, and a node allows 32 per user.
CL_SIM=(SWITCHBOARD_SIMULATED__TTFT_MS=$SIM_TTFT SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS=20
  SWITCHBOARD_SIMULATED__REPLY_TOKENS=40)
start_server cluster-a "${CL_SIM[@]}"
lt cluster-1-node ws-chat --users "$CL_USERS" --per-account 15 --messages 1000 \
  --duration "$CL_SECS" --ramp-ms 2000 --provider-ttft-ms $SIM_TTFT --watch
for n in 1 2; do
  launch "cluster-$n" "$((PORT + n))" "${CL_SIM[@]}"
  NODE_PIDS+=("$LAUNCHED")
done
lt cluster-3-nodes ws-chat --users "$CL_USERS" --per-account 15 --messages 1000 \
  --duration "$CL_SECS" --ramp-ms 2000 --provider-ttft-ms $SIM_TTFT --watch \
  --node-url "http://127.0.0.1:$((PORT + 1))" --node-pid "${NODE_PIDS[0]}" \
  --node-url "http://127.0.0.1:$((PORT + 2))" --node-pid "${NODE_PIDS[1]}"
for pid in "${NODE_PIDS[@]}"; do
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
NODE_PIDS=()
stop_server

# --- 7. the report ---------------------------------------------------------------------
total=$((SECONDS - started))
rustlog=${BENCH_RUST_LOG:-"(unset: the server's default, info,sqlx=warn,tower_http=info,lapin=warn)"}
cat >"$RESULTS/meta.json" <<EOF
{"settings": [
  ["build", "$PROFILE profile (cargo build $build_flag-p switchboard -p switchboard-loadtest), ${build_secs} s"],
  ["bench wall time", "${total} s in all, $((total - build_secs)) s without the build"],
  ["server", "one process on 127.0.0.1:$PORT, APP_ENV=development, RUST_LOG=$rustlog, logs to a file"],
  ["services", "PostgreSQL, Redis, RabbitMQ on this machine; database $DB recreated per phase, Redis prefix $PREFIX"],
  ["plan limits", "every tier: 100,000,000 messages/min, 1,000,000,000 tokens/min, budgets of \$1,000,000/day (limits and budgets still checked on every message); the sign-up and sign-in throttles and the edge connection caps (40,000 per node and per address) raised likewise"],
  ["simulated (latency runs)", "TTFT ${SIM_TTFT} ms, 40 tokens, 20 ms apart"],
  ["simulated (throughput runs)", "TTFT ${SIM_TTFT} ms, 10 tokens, 1 ms apart"],
  ["mock OpenAI provider", "loadtest mock-openai: TTFT 50 ms, 40 tokens, 20 ms apart, over HTTP on 127.0.0.1:$MOCK_PORT"],
  ["realistic mock", "loadtest mock-openai: TTFT 200 ms, 50 tokens, 10 ms apart, on 127.0.0.1:$REAL_MOCK_PORT; the openai runs with --compare-direct drive it directly, then through Switchboard"],
  ["simulated (CPU run)", "TTFT ${SIM_TTFT} ms, 20 tokens, 1 ms apart"],
  ["cluster runs", "simulated TTFT ${SIM_TTFT} ms, 40 tokens 20 ms apart; one node on :$PORT, then three processes on :$PORT-:$((PORT + 2)) sharing PostgreSQL, Redis and the same 2 cores"],
  ["open files limit", "$fd_limit (hard limit of this machine)"]
]}
EOF
if [ "${BENCH_NO_REPORT:-0}" = 1 ]; then
  log "done in ${total}s; results in $RESULTS (report skipped)"
else
  "$LOADTEST" report --results "$RESULTS" --out docs/BENCHMARKS.md
  log "done in ${total}s; results in $RESULTS, report in docs/BENCHMARKS.md"
fi
