#!/usr/bin/env bash
# The API contract, checked from the outside (CI runs this from .ci/run):
#
#   lint      openapi-spec-validator on the committed openapi/openapi.json
#   client    generates a Python client from it (openapi-python-client) into
#             target/clients/ and installs it into the venv
#   serve     builds and starts the real server (`memberledger serve`) on a free
#             port with its own fresh local PostgreSQL under target/
#   scenario  tests/clients/scenario.py: admin flows through the generated client only
#   fuzz      tests/clients/fuzz.sh: schemathesis against every operation of the spec
#
# Usage: bash tests/clients/run.sh [lint] [scenario] [fuzz]   (no argument: all three;
# `client` and `serve` run when a chosen step needs them). The Python tools live in a
# venv under target/clients-venv (made once, reused while tests/clients/requirements.txt
# is unchanged). Nothing is written outside target/ and nothing there is committed.
#
# Environment: FUZZ_EXAMPLES, FUZZ_TIMEOUT, FUZZ_SEED (see fuzz.sh); PYTHON (default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
HERE="$ROOT/tests/clients"
SPEC="$ROOT/openapi/openapi.json"
VENV="$ROOT/target/clients-venv"
OUT="$ROOT/target/clients"
CLIENT_DIR="$OUT/memberledger-client"
PYTHON="${PYTHON:-python3}"

STARTED_AT=$SECONDS
CURRENT_STEP="setup"
SERVER_PID=""
DATA_DIR=""
SERVER_LOG=""

step() {
    CURRENT_STEP="$1"
    printf '\n--> clients: %s (at %ss)\n' "$1" "$((SECONDS - STARTED_AT))"
}

want_lint=0 want_scenario=0 want_fuzz=0
if [ "$#" -eq 0 ]; then
    set -- lint scenario fuzz
fi
for arg in "$@"; do
    case "$arg" in
    lint) want_lint=1 ;;
    scenario) want_scenario=1 ;;
    fuzz) want_fuzz=1 ;;
    *)
        echo "usage: bash tests/clients/run.sh [lint] [scenario] [fuzz]" >&2
        exit 2
        ;;
    esac
done

# Directory holding pg_ctl (for stopping a cluster a killed server left behind).
pg_bindir() {
    local dir
    if dir="$(command -v pg_ctl 2>/dev/null)" && [ -n "$dir" ]; then
        dirname "$dir"
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

# The SMTP server sign-in emails go to: the tests' maildev (target/maildev) when it runs,
# else one started here (installed from npm on first use, like the tests do).
MAILDEV_SMTP=""
MAILDEV_WEB=""
start_maildev() {
    local dir="$ROOT/target/maildev" ports
    if [ -f "$dir/ports" ]; then
        read -r MAILDEV_SMTP MAILDEV_WEB < "$dir/ports" || true
        if [ -n "$MAILDEV_WEB" ] && (exec 3<>"/dev/tcp/127.0.0.1/$MAILDEV_WEB") 2>/dev/null; then
            echo "using the running maildev (smtp $MAILDEV_SMTP, web $MAILDEV_WEB)"
            return 0
        fi
    fi
    mkdir -p "$dir"
    [ -x "$dir/node_modules/maildev/bin/maildev" ] || npm install --no-audit --no-fund --prefix "$dir" maildev@2.2.1 >/dev/null
    ports="$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')"
    read -r MAILDEV_SMTP MAILDEV_WEB <<< "$ports"
    node "$dir/node_modules/maildev/bin/maildev" --ip 127.0.0.1 --web-ip 127.0.0.1 \
        --smtp "$MAILDEV_SMTP" --web "$MAILDEV_WEB" > "$dir/maildev.log" 2>&1 &
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$MAILDEV_WEB") 2>/dev/null && break
        sleep 0.2
    done
    echo "$MAILDEV_SMTP $MAILDEV_WEB" > "$dir/ports"
    echo "started maildev (smtp $MAILDEV_SMTP, web $MAILDEV_WEB)"
}

# Stops the server with SIGTERM and waits for it (it stops its PostgreSQL itself). Returns
# non-zero when it did not stop cleanly.
stop_server() {
    local pid="$SERVER_PID" status=0 bindir
    [ -n "$pid" ] || return 0
    SERVER_PID=""
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "clients: the server did not stop within 30 s of SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || status=$?
    # A server that died or was killed leaves its PostgreSQL running.
    if [ -n "$DATA_DIR" ] && [ -f "$DATA_DIR/pg/postmaster.pid" ] && bindir="$(pg_bindir)"; then
        echo "clients: stopping the PostgreSQL cluster the server left in $DATA_DIR/pg" >&2
        if [ "$(id -u)" -eq 0 ]; then
            runuser -u postgres -- "$bindir/pg_ctl" -D "$DATA_DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
        else
            "$bindir/pg_ctl" -D "$DATA_DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
        fi
        [ "$status" -ne 0 ] || status=1
    fi
    if [ "$status" -ne 0 ]; then
        echo "clients: the server exited with status $status" >&2
    fi
    return "$status"
}

on_exit() {
    local status=$?
    if [ -n "$SERVER_PID" ]; then
        printf '\n--> clients: stopping the server (SIGTERM)\n'
        if ! stop_server && [ "$status" -eq 0 ]; then
            CURRENT_STEP="stopping the server"
            status=1
        fi
    fi
    if [ "$status" -ne 0 ] && [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ]; then
        echo "clients: warnings and errors in the server log ($SERVER_LOG), then its last lines:" >&2
        grep -E '"level":"(WARN|ERROR)"' "$SERVER_LOG" | cut -c1-400 | head -n 20 >&2 || true
        echo "..." >&2
        tail -n 5 "$SERVER_LOG" | cut -c1-400 >&2 || true
    fi
    if [ "$status" -eq 0 ]; then
        [ -z "$DATA_DIR" ] || rm -rf "$DATA_DIR"
        printf '\nclients: OK (%s) in %ss\n' "$*" "$((SECONDS - STARTED_AT))"
    else
        printf '\nclients: FAILED during: %s (exit status %s) after %ss\n' \
            "$CURRENT_STEP" "$status" "$((SECONDS - STARTED_AT))" >&2
    fi
    exit "$status"
}
trap 'on_exit "$@"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "python tools (venv $VENV)"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "no $PYTHON with venv: installing Debian's python3 and python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends python3 python3-venv
        PYTHON=python3
    else
        echo "clients: needs Python 3.11+ with the venv module (set PYTHON)" >&2
        exit 1
    fi
fi
# The venv is made again when the requirements, the interpreter or its own path changed (a
# venv does not survive being moved); otherwise it is reused as it is.
stamp="$({ cat "$HERE/requirements.txt"; "$PYTHON" --version; echo "$VENV"; } | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements-stamp" 2>/dev/null || true)" = "$stamp" ]; then
    echo "requirements unchanged: reusing the venv"
else
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$HERE/requirements.txt"
    echo "$stamp" >"$VENV/.requirements-stamp"
fi
"$VENV/bin/python" --version
export PATH="$VENV/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$want_lint" -eq 1 ]; then
    step "lint: openapi-spec-validator openapi/openapi.json"
    openapi-spec-validator "$SPEC"
fi

if [ "$want_scenario" -eq 1 ]; then
    step "client: openapi-python-client generate (into ${CLIENT_DIR#"$ROOT"/})"
    mkdir -p "$OUT"
    rm -rf "$CLIENT_DIR"
    # --fail-on-warning: an operation or schema the generator cannot handle is a finding.
    openapi-python-client generate --path "$SPEC" --meta setup \
        --output-path "$CLIENT_DIR" --overwrite --fail-on-warning
    # Its dependencies (httpx, attrs) are pinned in requirements.txt.
    pip install --quiet --no-deps --no-build-isolation --force-reinstall "$CLIENT_DIR"
fi

if [ "$want_scenario" -eq 1 ] || [ "$want_fuzz" -eq 1 ]; then
    step "serve: cargo build, then memberledger serve on a free port"
    cargo build --quiet --bin memberledger
    mkdir -p "$ROOT/target"
    DATA_DIR="$(mktemp -d "$ROOT/target/clients-db.XXXXXX")"
    # The local PostgreSQL runs as `postgres` when we are root: it must traverse this.
    chmod 755 "$DATA_DIR"
    SERVER_LOG="$DATA_DIR/server.log"
    ADMIN_TOKEN="mlat_clients_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    start_maildev
    env -u DATABASE_URL \
        SMTP_URL="smtp://127.0.0.1:$MAILDEV_SMTP" \
        DATA_DIR="$DATA_DIR" \
        BIND=127.0.0.1:0 \
        ADMIN_TOKEN="$ADMIN_TOKEN" \
        STRIPE_WEBHOOK_SECRET=whsec_test \
        LOG_FORMAT=json \
        RUST_LOG="${RUST_LOG:-info,sqlx=warn,poem=warn}" \
        "$ROOT/target/debug/memberledger" serve >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    echo "server pid $SERVER_PID, data and log in ${DATA_DIR#"$ROOT"/}"

    addr=""
    for _ in $(seq 1 360); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "clients: the server exited before listening" >&2
            exit 1
        fi
        addr="$(grep -m1 '"listening' "$SERVER_LOG" 2>/dev/null |
            sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' || true)"
        [ -z "$addr" ] || break
        sleep 0.5
    done
    if [ -z "$addr" ]; then
        echo "clients: the server did not listen within 180 s" >&2
        exit 1
    fi
    BASE_URL="http://$addr"
    echo "listening on $BASE_URL; waiting for /readyz"
    python - "$BASE_URL" <<'EOF'
import sys, time, urllib.request, urllib.error

url = sys.argv[1] + "/readyz"
deadline = time.monotonic() + 60
last = None
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            if resp.status == 200:
                print("ready:", resp.read().decode()[:200])
                sys.exit(0)
    except (urllib.error.URLError, OSError) as err:
        last = err
    time.sleep(0.5)
sys.exit(f"{url} did not answer 200 within 60 s (last: {last})")
EOF
fi

if [ "$want_scenario" -eq 1 ]; then
    step "scenario: tests/clients/scenario.py (generated client only)"
    python "$HERE/scenario.py" --base-url "$BASE_URL" --token "$ADMIN_TOKEN" --spec "$SPEC" \
        --maildev "http://127.0.0.1:$MAILDEV_WEB"
fi

if [ "$want_fuzz" -eq 1 ]; then
    step "fuzz: tests/clients/fuzz.sh (schemathesis)"
    BASE_URL="$BASE_URL" ADMIN_TOKEN="$ADMIN_TOKEN" bash "$HERE/fuzz.sh"
    # Every request the fuzzer sent must have been answered without a server error.
    if grep -q '"level":"ERROR"' "$SERVER_LOG"; then
        echo "clients: the server logged errors while fuzzed:" >&2
        grep '"level":"ERROR"' "$SERVER_LOG" | cut -c1-400 | head -n 20 >&2
        exit 1
    fi
fi

if [ -n "$SERVER_PID" ]; then
    step "stop: SIGTERM to the server, wait"
    stop_server
fi
