#!/usr/bin/env bash
# Where the server's CPU goes under one load: starts the release build on
# loopback (the bench's database, prefix and raised limits, via scripts/bench.sh's
# settings), drives it with one loadtest scenario, samples the server with
# `perf record -g` (cpu-clock: this VM has no hardware counters) while the
# scenario runs, and prints the hottest symbols, self and with children.
# docs/BENCHMARKS.md ("Profiling") records what these showed.
#
#   scripts/profile.sh openai-cpu     /v1 streams of 20 simulated tokens, 50 at a time
#   scripts/profile.sh ws-throughput  WebSocket chat, 10-token answers, 500 users
#   scripts/profile.sh ws-ack         open loop, 1,000 messages/s
#   scripts/profile.sh ws-1k          1,000 WebSocket chats at once, 40-token answers 20 ms apart
#                                     (the bench's ws-chat-1k)
#   scripts/profile.sh openai-realistic  1,000 /v1 streams through the mock OpenAI provider
#                                     (200 ms TTFT, 50 tokens 10 ms apart), then straight to it
#   scripts/profile.sh openai-cpu SWITCHBOARD_AUTH__KEY_CACHE_MS=0   settings for the server
#   PROFILE_TAG=before scripts/profile.sh ...                        results in profile-<name>-before/
#   PROFILE_PERF=0 PROFILE_BIN=/tmp/old scripts/profile.sh ...       no sampling (a before/after
#       run of another build's binaries); prints PostgreSQL's CPU during the run either way
#   PROFILE_HZ=99 PROFILE_CALLGRAPH="--call-graph dwarf,16384" scripts/profile.sh ...
#       call stacks through Rust code (the release build has no frame pointers), at a
#       lower rate: dwarf samples are large
#
# Needs a release build (cargo build --release -p switchboard -p switchboard-loadtest)
# and the services up (make setup). Output goes to loadtest/results/profile-<name>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
name=${1:?usage: scripts/profile.sh openai-cpu|ws-throughput|ws-ack|ws-1k|openai-realistic [VAR=VALUE...]}
shift
server_env=("$@")
PORT=${PROFILE_PORT:-18180}
URL="http://127.0.0.1:$PORT"
DB=switchboard_profile
PREFIX=sbprofile
BIN=${PROFILE_BIN:-target/release}
OUT="loadtest/results/profile-$name${PROFILE_TAG:+-$PROFILE_TAG}"
SECS=${PROFILE_SECS:-15}

[ -x "$BIN/switchboard" ] && [ -x "$BIN/loadtest" ] ||
  { echo "build first: cargo build --release -p switchboard -p switchboard-loadtest" >&2; exit 1; }
PERF=${PROFILE_PERF:-1}
[ "$PERF" = 0 ] || command -v perf >/dev/null ||
  { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

limits=()
for tier in FREE PRO TEAM; do
  limits+=("SWITCHBOARD_PLANS__${tier}__MESSAGES_PER_MINUTE=100000000"
    "SWITCHBOARD_PLANS__${tier}__TOKENS_PER_MINUTE=1000000000"
    "SWITCHBOARD_PLANS__${tier}__DAILY_BUDGET_MICROS=1000000000000"
    "SWITCHBOARD_PLANS__${tier}__MONTHLY_BUDGET_MICROS=10000000000000")
done
limits+=("SWITCHBOARD_PLANS__TEAM__USER_DAILY_BUDGET_MICROS=1000000000000"
  "SWITCHBOARD_PLANS__TEAM__USER_MONTHLY_BUDGET_MICROS=10000000000000"
  "SWITCHBOARD_AUTH__SIGNUP_MAX_PER_IP=100000000" "SWITCHBOARD_AUTH__SIGNUP_MAX_GLOBAL=100000000"
  "SWITCHBOARD_AUTH__SIGNIN_MAX_PER_IP=100000000" "SWITCHBOARD_AUTH__SIGNIN_MAX_PER_EMAIL=100000000"
  "SWITCHBOARD_EDGE__MAX_CONNECTIONS=40000" "SWITCHBOARD_EDGE__MAX_CONNECTIONS_PER_IP=40000"
  "SWITCHBOARD_EDGE__MAX_UNAUTHENTICATED_WS=40000" "SWITCHBOARD_EDGE__MAX_SSE_STREAMS_PER_USER=100000")

case "$name" in
  openai-cpu) tokens=20 delay=1 load=(openai --concurrency 50) ;;
  ws-throughput) tokens=10 delay=1 load=(ws-chat --users 500 --per-account 30 --messages 100000 --ramp-ms 1000) ;;
  ws-ack) tokens=10 delay=1 load=(ws-chat --users 200 --per-account 30 --rate 1000 --messages 100000) ;;
  ws-1k) tokens=40 delay=20 load=(ws-chat --users 1000 --per-account 30 --messages 1000 --ramp-ms 2000) ;;
  openai-realistic)
    mock_port=$((PORT + 11))
    tokens=20 delay=1 ttft=200
    load=(openai --concurrency 1000 --model gpt-4o-mini --compare-direct "http://127.0.0.1:$mock_port/v1")
    server_env+=("OPENAI_BASE_URL=http://127.0.0.1:$mock_port/v1" OPENAI_API_KEY=profile-not-a-secret
      LLM_PROVIDER_FREE_TIER=openai LLM_PROVIDER_PAID_TIER=openai
      SWITCHBOARD_PROVIDERS__LIMITS__DEFAULT__CONCURRENCY=100000)
    "$BIN/loadtest" mock-openai --port "$mock_port" --ttft-ms 200 --tokens 50 --token-delay-ms 10 \
      --max-secs 600 >"$OUT/mock.log" 2>&1 &
    mock=$! ;;
  *) echo "unknown profile $name" >&2; exit 2 ;;
esac

env -u RUST_LOG APP_ENV=development HOST=127.0.0.1 PORT="$PORT" \
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" SWITCHBOARD_REDIS__KEY_PREFIX="$PREFIX" \
  SWITCHBOARD_SIMULATED__TTFT_MS=50 SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS="$delay" \
  SWITCHBOARD_SIMULATED__REPLY_TOKENS="$tokens" "${limits[@]}" "${server_env[@]}" \
  "$BIN/switchboard" serve >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server ${mock:-} 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -fsS "$URL/ready" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "$URL/ready" >/dev/null || { tail -20 "$OUT/server.log"; exit 1; }

"$BIN/loadtest" "${load[@]}" --url "$URL" --server-pid "$server" --duration "$SECS" \
  --provider-ttft-ms "${ttft:-50}" --label "profile-$name" --out "$OUT/run.json" >"$OUT/loadtest.log" 2>&1 &
load_pid=$!
# PostgreSQL's CPU (clock ticks of its live processes) over the measured phase.
pg_ticks() {
  local t=0 p v
  for p in $(pgrep -x postgres); do
    for v in $(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null); do t=$((t + v)); done
  done
  echo "$t"
}
# Skip set-up (sign-ups, sockets): sample once the measured phase has begun.
for _ in $(seq 240); do grep -q "s] started " "$OUT/loadtest.log" 2>/dev/null && break; sleep 0.5; done
pg0=$(pg_ticks)
if [ "$PERF" = 0 ]; then
  wait "$load_pid" || true
  pg1=$(pg_ticks)
  tail -25 "$OUT/loadtest.log"
  echo "postgres CPU during the measured phase: $(((pg1 - pg0) * 1000 / $(getconf CLK_TCK))) ms"
  exit 0
fi
sleep 2
perf record -F ${PROFILE_HZ:-499} ${PROFILE_CALLGRAPH:--g} -p "$server" -o "$OUT/perf.data" -- sleep "$((SECS - 4))" 2>"$OUT/perf-record.log"
wait "$load_pid" || true
pg1=$(pg_ticks)
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep -v "^$" | grep "%" | head -60 >"$OUT/self.txt" || true
perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
  grep -v "^$" | grep "%" | head -80 >"$OUT/children.txt" || true
tail -25 "$OUT/loadtest.log"
echo "postgres CPU during the measured phase: $(((pg1 - pg0) * 1000 / $(getconf CLK_TCK))) ms"
echo "--- self (top 40) ---"; head -40 "$OUT/self.txt"
echo "profile in $OUT (perf.data, self.txt, children.txt)"
