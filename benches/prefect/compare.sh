#!/usr/bin/env bash
# Amdahl against Prefect 3 on this machine, in one run (see compare.py for what is timed).
# Not part of CI: it downloads Prefect from PyPI into a virtualenv (kept in
# AMDAHL_PREFECT_VENV, default ~/.cache/amdahl-bench/prefect-venv) and builds `amdahl` in
# release. AMDAHL_BENCH_POSTGRES_URL=postgres://… adds Amdahl on PostgreSQL (a database is
# created there and dropped). AMDAHL_BIN=PATH uses that binary instead of building one (e.g. the
# one `cargo bench --bench overhead` built in target/release, whose features differ from a plain
# release build's, which rebuilds DataFusion).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${AMDAHL_PREFECT_VENV:-$HOME/.cache/amdahl-bench/prefect-venv}"
if [ ! -x "$venv/bin/prefect" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'prefect>=3,<4'
fi
"$venv/bin/python" -c 'import prefect; print("Prefect", prefect.__version__)'
amdahl="${AMDAHL_BIN:-}"
if [ -z "$amdahl" ]; then
  cargo build --release --quiet --bin amdahl
  amdahl="$PWD/target/release/amdahl"
fi
prefect_home=$(mktemp -d)
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_HOME="$prefect_home" PREFECT_API_URL="http://127.0.0.1:$port/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING
"$venv/bin/prefect" server start --host 127.0.0.1 --port "$port" > "$prefect_home/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
  sleep 1
done
"$venv/bin/python" benches/prefect/compare.py "$(realpath "$amdahl")"
