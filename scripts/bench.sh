#!/usr/bin/env bash
# Benchmarks with published figures (docs/benchmarks.md).
#
#   build     cargo build --release of the server (`memberledger`) and the load generator
#             (`loadgen`, the crate loadgen/) into target/bench
#   infra     a fresh PostgreSQL cluster under target/bench/pg with normal durability settings
#             (fsync, synchronous_commit, full_page_writes on) and a fake Stripe API on loopback,
#             both held by `loadgen infra` until this script stops it
#   e         pgbench: one events-shaped INSERT per transaction at 1, 4 and 16 clients, without
#             and with the events table's NOTIFY trigger
#   stock     the peer: the stock cqrs-es + postgres-es pipeline (one aggregate, one GenericQuery
#             view) executing commands in-process at 1, 4 and 16 tasks, then
#             QueryReplay::replay_all of its view, in a database `stock` of the same cluster
#   a, alone  webhook acceptance with the inbox paused: a server with STRIPE_WORKERS=0 takes
#             signed lifecycles of their own (deleted again), then is stopped
#   serve     the real server: memberledger serve on a free loopback port
#   b         POST /v1/members at 1, 4 and 16 clients
#   lag       projection lag at rest: 20 member creations/s, each until member_timeline shows it
#   a         signed Stripe lifecycles, then the time until the inbox and every projection are done
#             (then the server's peak RSS, and the server is stopped)
#   c         1,000,000 MemberCreated/MemberUpdated events appended with SQL, then
#             `memberledger projections rebuild --all` timed (a note instead when the build has
#             no such command)
#   d         the server again: dashboard and license-validation reads at 1, 16 and 64 clients,
#             then member creation again, now with the large log
#   f         `memberledger members import` of a generated CSV of new members (the server
#             running), then of the same file again: rows/s, events appended, peak RSS
#   report    the server's peak RSS, then docs/benchmarks.md (its analysis section is kept)
#
# Usage: bash scripts/bench.sh
# Environment: BENCH_EVENTS (1000000), BENCH_LIFECYCLES (1000), BENCH_ACCEPT_LIFECYCLES (4000,
# acceptance alone), BENCH_SECONDS (10 per run),
# BENCH_IMPORT_MEMBERS (100000),
# BENCH_OUT (docs/benchmarks.md), BENCH_NOTE (a sentence about the run's conditions),
# BENCH_SKIP_BUILD=1 (use the binaries already in target/bench/release),
# BENCH_REF=<commit> (measure that commit's server: `git archive` into target/bench/src; the
# load generator is the working tree's; default: the working tree as it is).
# Needs PostgreSQL's server binaries (initdb, pg_ctl, pgbench); as root the cluster runs as
# `postgres`. Everything it starts is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
BENCH="$ROOT/target/bench"
# A measured commit (BENCH_REF) builds in a target directory of its own: cargo keys its
# freshness checks on the package, not the source path, so a shared one could hand back the
# other tree's binaries as up to date.
# The load generator always builds from the working tree, so with BENCH_REF it needs a target
# directory other than the measured commit's.
if [ -n "${BENCH_REF:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BENCH/ref-target}"
    LOADGEN_TARGET_DIR="$BENCH"
    [ "$CARGO_TARGET_DIR" != "$BENCH" ] || LOADGEN_TARGET_DIR="$BENCH/loadgen-target"
else
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BENCH}"
    LOADGEN_TARGET_DIR="$CARGO_TARGET_DIR"
fi
BIN="$CARGO_TARGET_DIR/release"
LOADGEN="$LOADGEN_TARGET_DIR/release/loadgen"
RESULTS="$BENCH/results"
PG_DIR="$BENCH/pg"
LOGS="$BENCH/logs"
FIXTURES="$ROOT/../shared/stripe/fixtures3.json"
EVENTS="${BENCH_EVENTS:-1000000}"
LIFECYCLES="${BENCH_LIFECYCLES:-1000}"
ACCEPT_LIFECYCLES="${BENCH_ACCEPT_LIFECYCLES:-4000}"
IMPORT_MEMBERS="${BENCH_IMPORT_MEMBERS:-100000}"
RUN_SECONDS="${BENCH_SECONDS:-10}"
OUT="${BENCH_OUT:-$ROOT/docs/benchmarks.md}"
NOTE="${BENCH_NOTE:-}"
REF="${BENCH_REF:-}"

STARTED_AT=$SECONDS
MEASURE_STARTED_AT=""
CURRENT_STEP="setup"
INFRA_PID=""
SERVER_PID=""

step() {
    CURRENT_STEP="$1"
    printf '\n==> bench: %s (at %ss)\n' "$1" "$((SECONDS - STARTED_AT))"
}

# Directory holding initdb/pg_ctl/pgbench, as src/localpg/ looks for them.
pg_bindir() {
    local dir
    # PATH often holds symlinks (e.g. /usr/local/bin/pg_ctl): the real directory has pgbench.
    if dir="$(command -v pg_ctl 2>/dev/null)" && [ -n "$dir" ]; then
        dirname "$(readlink -f "$dir")"
        return 0
    fi
    if dir="$(pg_config --bindir 2>/dev/null)" && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

pg_ctl_stop() {
    local bindir
    [ -f "$PG_DIR/postmaster.pid" ] || return 0
    bindir="$(pg_bindir)" || return 0
    echo "bench: stopping the PostgreSQL cluster in ${PG_DIR#"$ROOT"/}" >&2
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$bindir/pg_ctl" -D "$PG_DIR" -m fast -w stop >/dev/null 2>&1 || true
    else
        "$bindir/pg_ctl" -D "$PG_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# SIGTERM to one process this script started, then wait (up to $2 seconds) before SIGKILL.
stop_pid() {
    local pid="$1" grace="$2" name="$3" status=0
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((grace * 2))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "bench: $name did not stop within ${grace} s of SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}

stop_server() {
    local pid="$SERVER_PID"
    SERVER_PID=""
    stop_pid "$pid" 30 "the server"
}

on_exit() {
    local status=$?
    if [ -n "$SERVER_PID" ]; then
        stop_server || true
    fi
    if [ -n "$INFRA_PID" ]; then
        # loadgen infra stops its cluster on SIGTERM.
        stop_pid "$INFRA_PID" 60 "loadgen infra" || true
        INFRA_PID=""
    fi
    # A killed helper leaves its cluster running.
    pg_ctl_stop
    if [ "$status" -ne 0 ]; then
        if [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ]; then
            echo "bench: errors in the server log (${SERVER_LOG#"$ROOT"/}), then its last lines:" >&2
            grep -E '"level":"(WARN|ERROR)"' "$SERVER_LOG" | cut -c1-400 | head -n 15 >&2 || true
            tail -n 5 "$SERVER_LOG" | cut -c1-400 >&2 || true
        fi
        printf '\nbench: FAILED during: %s (exit status %s) after %ss\n' \
            "$CURRENT_STEP" "$status" "$((SECONDS - STARTED_AT))" >&2
    else
        printf '\nbench: OK in %ss (%ss after the build); figures in %s\n' \
            "$((SECONDS - STARTED_AT))" "$((SECONDS - ${MEASURE_STARTED_AT:-$STARTED_AT}))" \
            "${OUT#"$ROOT"/}"
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_BINDIR="$(pg_bindir)" || {
    echo "bench: PostgreSQL server binaries (initdb, pg_ctl, pgbench) not found; install PostgreSQL" >&2
    exit 1
}
[ -x "$PG_BINDIR/pgbench" ] || {
    echo "bench: no pgbench in $PG_BINDIR" >&2
    exit 1
}
[ -f "$FIXTURES" ] || {
    echo "bench: Stripe fixtures not found at $FIXTURES" >&2
    exit 1
}

BUILD_DIR="$ROOT"
COMMIT_NOTE=""
if [ -n "$REF" ]; then
    COMMIT="$(git rev-parse --short=12 "$REF^{commit}")"
    COMMIT_NOTE="$COMMIT (the committed tree, built from \`git archive\`; the load generator from the working tree)"
    BUILD_DIR="$BENCH/src"
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    if [ -n "$REF" ]; then
        step "source: git archive $REF ($COMMIT) into ${BUILD_DIR#"$ROOT"/}"
        rm -rf "$BUILD_DIR"
        mkdir -p "$BUILD_DIR"
        git archive "$COMMIT" | tar -x -C "$BUILD_DIR"
        step "build: cargo build --release --bin memberledger in ${BUILD_DIR#"$ROOT"/} (CARGO_TARGET_DIR=${CARGO_TARGET_DIR#"$ROOT"/})"
        (cd "$BUILD_DIR" && cargo build --release --bin memberledger)
        step "build: the load generator from the working tree: cargo build --release -p memberledger-loadgen (CARGO_TARGET_DIR=${LOADGEN_TARGET_DIR#"$ROOT"/})"
        CARGO_TARGET_DIR="$LOADGEN_TARGET_DIR" cargo build --release -p memberledger-loadgen --bin loadgen
    else
        step "build: cargo build --release -p memberledger -p memberledger-loadgen (CARGO_TARGET_DIR=${CARGO_TARGET_DIR#"$ROOT"/})"
        cargo build --release -p memberledger --bin memberledger -p memberledger-loadgen --bin loadgen
    fi
fi
for bin in "$BIN/memberledger" "$LOADGEN"; do
    [ -x "$bin" ] || {
        echo "bench: $bin is missing" >&2
        exit 1
    }
done
MEASURE_STARTED_AT=$SECONDS

step "infra: a fresh PostgreSQL under ${PG_DIR#"$ROOT"/} (normal durability) and a fake Stripe API"
mkdir -p "$BENCH" "$LOGS"
# The cluster runs as `postgres` when we are root: it must traverse these.
chmod 755 "$ROOT/target" "$BENCH"
pg_ctl_stop
rm -rf "$PG_DIR" "$RESULTS" "$BENCH/infra.env"
mkdir -p "$RESULTS"
read -r LOAD1 LOAD5 LOAD15 _ </proc/loadavg
OTHERS="$(ps -eo comm= | grep -cE '^(rustc|cargo|cc1|cc1plus|ld|clang)' || true)"
"$LOADGEN" infra --pg-dir "$PG_DIR" --env-file "$BENCH/infra.env" --fixtures "$FIXTURES" \
    >"$LOGS/infra.log" 2>&1 &
INFRA_PID=$!
for _ in $(seq 1 240); do
    [ -f "$BENCH/infra.env" ] && break
    if ! kill -0 "$INFRA_PID" 2>/dev/null; then
        cat "$LOGS/infra.log" >&2
        echo "bench: loadgen infra exited before it was ready" >&2
        exit 1
    fi
    sleep 0.5
done
[ -f "$BENCH/infra.env" ] || {
    echo "bench: loadgen infra was not ready within 120 s" >&2
    exit 1
}
# shellcheck disable=SC1091
. "$BENCH/infra.env"
export BENCH_DATABASE_URL
echo "PostgreSQL on 127.0.0.1:$BENCH_PG_PORT, fake Stripe at $BENCH_STRIPE_API_BASE"

step "migrate"
DATABASE_URL="$BENCH_DATABASE_URL" "$BIN/memberledger" migrate

step "e. pgbench: one events-shaped INSERT per transaction, without and with NOTIFY, 1/4/16 clients, ${RUN_SECONDS} s each"
"$LOADGEN" pgbench --results "$RESULTS" --pgbench "$PG_BINDIR/pgbench" \
    --clients 1,4,16 --seconds "$RUN_SECONDS"

step "e, again. the stock pipeline: cqrs-es + postgres-es Create commands in-process at 1/4/16 tasks and Update at 16, ${RUN_SECONDS} s each, then QueryReplay::replay_all"
"$LOADGEN" stock --results "$RESULTS" --tasks 1,4,16 --seconds "$RUN_SECONDS"

BENCH_ADMIN_TOKEN="mlat_bench_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
BENCH_WEBHOOK_SECRET="whsec_bench_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
export BENCH_ADMIN_TOKEN BENCH_WEBHOOK_SECRET
SERVER_LOG=""

# Starts `memberledger serve` on a free loopback port (log in $LOGS/$1), waits for /readyz.
# Settings are the defaults but for the secrets, the fake Stripe API, JSON logs and a license
# validation limit no single load generator address can reach; further arguments are more
# settings (`NAME=value`).
start_server() {
    SERVER_LOG="$LOGS/$1"
    shift
    env -u DATA_DIR -u DATABASE_MAX_CONNECTIONS -u STRIPE_WORKERS -u READ_YOUR_WRITES_TIMEOUT_MS \
        DATABASE_URL="$BENCH_DATABASE_URL" \
        BIND=127.0.0.1:0 \
        ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" \
        STRIPE_WEBHOOK_SECRET="$BENCH_WEBHOOK_SECRET" \
        STRIPE_SECRET_KEY=sk_test_bench \
        STRIPE_API_BASE="$BENCH_STRIPE_API_BASE" \
        LICENSE_VALIDATE_LIMIT_PER_MINUTE=1000000000 \
        LOG_FORMAT=json \
        RUST_LOG="info,sqlx=warn,poem=warn" \
        "$@" \
        "$BIN/memberledger" serve >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local addr="" ready=0
    for _ in $(seq 1 120); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench: the server exited before listening" >&2
            return 1
        fi
        addr="$(grep -m1 '"listening' "$SERVER_LOG" 2>/dev/null |
            sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)"
        [ -z "$addr" ] || break
        sleep 0.5
    done
    if [ -z "$addr" ]; then
        echo "bench: the server did not listen within 60 s" >&2
        return 1
    fi
    export BENCH_URL="http://$addr"
    for _ in $(seq 1 120); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$BENCH_URL/readyz" || true)" = 200 ]; then
            ready=1
            break
        fi
        sleep 0.5
    done
    if [ "$ready" -ne 1 ]; then
        echo "bench: $BENCH_URL/readyz did not answer 200 within 60 s" >&2
        return 1
    fi
    echo "server pid $SERVER_PID at $BENCH_URL (log: ${SERVER_LOG#"$ROOT"/})"
}

check_server_log() {
    if grep -q '"level":"ERROR"' "$SERVER_LOG"; then
        echo "bench: the server logged errors (${SERVER_LOG#"$ROOT"/}):" >&2
        grep '"level":"ERROR"' "$SERVER_LOG" | cut -c1-400 | head -n 10 >&2
    fi
}

step "a, alone. webhook acceptance with the inbox paused: a server with STRIPE_WORKERS=0, $ACCEPT_LIFECYCLES other lifecycles, 16 at once"
start_server server-accept.log STRIPE_WORKERS=0
"$LOADGEN" webhooks --results "$RESULTS" --fixtures "$FIXTURES" --accept-only \
    --name webhooks_paused --lifecycles "$ACCEPT_LIFECYCLES" --concurrency 16
check_server_log
stop_server

step "serve: memberledger serve on a free loopback port"
start_server server-writes.log

step "b. member creation: POST /v1/members at 1/4/16 clients, ${RUN_SECONDS} s each"
"$LOADGEN" members --results "$RESULTS" --concurrency 1,4,16 --seconds "$RUN_SECONDS"

step "lag: projection lag at rest, 20 member creations/s for ${RUN_SECONDS} s until member_timeline shows each"
"$LOADGEN" lag --results "$RESULTS" --rate 20 --seconds "$RUN_SECONDS"

step "a. webhook ingestion: $LIFECYCLES signed Stripe lifecycles, 16 at once, until processed and projected"
"$LOADGEN" webhooks --results "$RESULTS" --fixtures "$FIXTURES" \
    --lifecycles "$LIFECYCLES" --concurrency 16

step "server memory after the writes: VmHWM of pid $SERVER_PID"
"$LOADGEN" rss --results "$RESULTS" --pid "$SERVER_PID" --name server_rss_writes
check_server_log

# Its runners would otherwise apply the seeded events at once, competing with the rebuild.
step "stop the server (the seeded log is projected by the rebuild alone)"
stop_server

step "c. seed: $EVENTS MemberCreated/MemberUpdated events appended with SQL"
"$LOADGEN" seed --results "$RESULTS" --events "$EVENTS"

step "c. rebuild: memberledger projections rebuild --all"
"$LOADGEN" rebuild --results "$RESULTS" --memberledger "$BIN/memberledger"

step "serve again, on the rebuilt read models"
start_server server-reads.log

step "d. reads with the large log: dashboard and license validation at 1, 16 and 64 clients"
"$LOADGEN" reads --results "$RESULTS" --concurrency 1,16,64 --seconds "$RUN_SECONDS"

step "b, again: POST /v1/members at 1/16 clients with the large log, ${RUN_SECONDS} s each"
"$LOADGEN" members --results "$RESULTS" --concurrency 1,16 --seconds "$RUN_SECONDS" \
    --name members_large

step "server memory after the reads: VmHWM of pid $SERVER_PID"
"$LOADGEN" rss --results "$RESULTS" --pid "$SERVER_PID" --name server_rss_reads
check_server_log

step "f. import: $IMPORT_MEMBERS new members from CSV with memberledger members import, then the same file again"
"$LOADGEN" import --results "$RESULTS" --memberledger "$BIN/memberledger" --members "$IMPORT_MEMBERS"

step "stop the server"
stop_server

step "report: ${OUT#"$ROOT"/}"
if [ -z "$NOTE" ]; then
    NOTE="load average $LOAD1/$LOAD5/$LOAD15 when the run began"
    if [ "${OTHERS:-0}" -gt 0 ]; then
        NOTE="$NOTE; other work ran on the machine meanwhile ($OTHERS compiler processes at the start)"
    fi
fi
"$LOADGEN" report --results "$RESULTS" --out "$OUT" --note "$NOTE" ${COMMIT_NOTE:+--commit "$COMMIT_NOTE"}
