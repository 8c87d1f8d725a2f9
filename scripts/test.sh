#!/usr/bin/env bash
# Runs the whole suite against PostgreSQL, then the SQLite subset.
# PostgreSQL: TEST_DATABASE_URL if set; else 127.0.0.1:5432 (user postgres); else a
# throwaway cluster from local binaries (pg_ctl, initdb), removed afterwards.
# Never skips: no PostgreSQL at all is a failure, and so is a run in which no test ran
# (pytest exit 5). Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PYTEST=(.venv/bin/pytest)

port_open() { "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PYEOF
}

find_pg_bin() {
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  local d
  for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
    if [[ -x "$d/pg_ctl" && -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  done
  return 1
}

CLUSTER_DIR=""
cleanup() {
  if [[ -n "$CLUSTER_DIR" ]]; then
    $AS_PG "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
  fi
}
trap cleanup EXIT

if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
  if [[ "${PORTAL_TEST_THROWAWAY_PG:-}" != "1" ]] && port_open 127.0.0.1 5432; then
    export TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
  elif PG_BIN="$(find_pg_bin)"; then
    CLUSTER_DIR="$(mktemp -d -t portal-pg-XXXXXX)"
    AS_PG=""
    if [[ "$(id -u)" == "0" ]]; then
      # initdb refuses to run as root: run the cluster as an unprivileged user.
      PG_USER="$(id -un postgres 2>/dev/null || echo nobody)"
      chown "$PG_USER" "$CLUSTER_DIR"
      AS_PG="runuser -u $PG_USER --"
    fi
    PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "test.sh: starting a throwaway PostgreSQL on 127.0.0.1:$PORT ($CLUSTER_DIR)"
    $AS_PG "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    $AS_PG "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $CLUSTER_DIR -c fsync=off -c max_connections=200" start >/dev/null
    export TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
  else
    echo "test.sh: no PostgreSQL: set TEST_DATABASE_URL, run one on 127.0.0.1:5432, or install its binaries" >&2
    exit 3
  fi
fi

# The offline portal's browser test (tests/e2e) drives Debian's chromium through Playwright,
# which never downloads a browser of its own: install the package when it is missing.
if [[ -z "${PORTAL_TEST_CHROMIUM:-}" ]] && ! command -v chromium >/dev/null; then
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  echo "test.sh: installing chromium for the browser test"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
    || { echo "test.sh: could not install chromium (the browser test needs it)" >&2; exit 3; }
fi

case "$TEST_DATABASE_URL" in
  postgresql*) ;;
  *) echo "test.sh: TEST_DATABASE_URL must be a postgresql+asyncpg:// URL" >&2; exit 3 ;;
esac

# Each run names its backend: a PORTAL_TEST_BACKEND=sqlite left in the caller's environment
# must not turn the PostgreSQL run into a second SQLite subset.
echo "test.sh: PostgreSQL run"
PORTAL_TEST_BACKEND=postgresql "${PYTEST[@]}" "$@"
echo "test.sh: SQLite subset"
PORTAL_TEST_BACKEND=sqlite "${PYTEST[@]}" -m sqlite "$@"
