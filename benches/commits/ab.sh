#!/bin/bash
# Two builds of `amdahl`, one after the other, on one PostgreSQL server: a chain of 40
# `shell: "true"` tasks run RUNS times by `amdahl scheduler` + `amdahl worker` at default
# flags, timed from `amdahl trigger --wait` to its exit, and the WAL flushes the server made
# per task (`pg_stat_wal.wal_sync`, read after the services exit, since a backend reports its
# statistics when it goes idle or exits).
#
#   benches/commits/ab.sh OLD_BINARY NEW_BINARY [RUNS]     (AMDAHL_BENCH_POSTGRES_URL: server)
set -euo pipefail
old=$1 new=$2 runs=${3:-9}
server=${AMDAHL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/dags"
{
  echo "dag: chain40"
  echo "tasks:"
  for i in $(seq 0 39); do
    echo "  t$i:"
    [ "$i" -gt 0 ] && echo "    needs: [t$((i - 1))]"
    echo '    shell: "true"'
  done
} > "$work/dags/chain40.yaml"

export PGOPTIONS="--client-min-messages=warning"
flushes() { psql -qAtX "$server" -c "SELECT wal_sync FROM pg_stat_wal"; }

one() {
  local bin=$1 label=$2 db="amdahl_commits_ab"
  psql -qX "$server" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" > /dev/null
  export AMDAHL_DATABASE_URL="${server%/*}/$db" AMDAHL_HOME="$work/home-$label"
  "$bin" db migrate > /dev/null
  start() {
    "$bin" scheduler --dags-folder "$work/dags" > "$work/scheduler.log" 2>&1 & scheduler=$!
    "$bin" worker > "$work/worker.log" 2>&1 & worker=$!
    sleep 2
  }
  stop() { kill "$scheduler" "$worker"; wait "$scheduler" "$worker" 2> /dev/null || true; sleep 1; }
  start
  "$bin" trigger "$work/dags/chain40.yaml" --wait > /dev/null   # warm-up
  stop
  local before; before=$(flushes)
  start
  local times=()
  for _ in $(seq "$runs"); do
    local s e; s=$(date +%s%N)
    "$bin" trigger "$work/dags/chain40.yaml" --wait > /dev/null
    e=$(date +%s%N)
    times+=("$(( (e - s) / 40 ))")
  done
  stop
  local after; after=$(flushes)
  psql -qX "$server" -c "DROP DATABASE $db" > /dev/null
  local sorted; sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  printf '| %-5s | %6.2f | %6.2f | %6.2f | %5.2f |\n' "$label" \
    "$(echo "$sorted" | head -1 | awk '{print $1 / 1e6}')" \
    "$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p" | awk '{print $1 / 1e6}')" \
    "$(echo "$sorted" | tail -1 | awk '{print $1 / 1e6}')" \
    "$(echo "$after $before $runs" | awk '{print ($1 - $2) / ($3 * 40)}')"
}

echo "| build | min ms/task | median ms/task | max ms/task | WAL flushes/task |"
echo "|---|---:|---:|---:|---:|"
one "$old" old
one "$new" new
