#!/bin/bash
# Two builds of `amdahl`, taking turns, on PostgreSQL at default flags (a URL without
# `sslmode`, no `--slots`): a run of WIDE independent `empty` tasks (default 10,000), timed from
# `amdahl trigger --wait` to its exit, after a warm-up run of 40 on the same services and a
# new database. Prints completions per second for each build, twice each.
#
#   AMDAHL_BENCH_POSTGRES_URL=postgres://…/postgres benches/chain/wide.sh OLD_BINARY NEW_BINARY [WIDE]
set -euo pipefail
old=$1 new=$2 wide=${3:-10000}
server=${AMDAHL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d)
trap 'rm -rf "$work"; jobs -p | xargs -r kill 2>/dev/null' EXIT
mkdir "$work/dags" "$work/empty"
dag() {
  echo "dag: $1"
  echo "max_active_tasks: $2"
  echo "tasks:"
  for i in $(seq 0 $(($2 - 1))); do
    echo "  t$i:"
    echo '    empty: {}'
  done
}
dag warm 40 > "$work/dags/warm.yaml"
dag wide "$wide" > "$work/dags/wide.yaml"
export PGOPTIONS="--client-min-messages=warning"

one() {
  local bin=$1
  psql -qX "$server" -c "DROP DATABASE IF EXISTS amdahl_wide_ab" \
    -c "CREATE DATABASE amdahl_wide_ab" > /dev/null
  export AMDAHL_DATABASE_URL="${server%/*}/amdahl_wide_ab" AMDAHL_HOME="$work/home"
  "$bin" db migrate > /dev/null
  "$bin" scheduler --dags-folder "$work/empty" 2> /dev/null & local s=$!
  "$bin" worker 2> /dev/null & local w=$!
  "$bin" trigger "$work/dags/warm.yaml" --wait > /dev/null
  local start end
  start=$(date +%s%N)
  "$bin" trigger "$work/dags/wide.yaml" --wait > /dev/null
  end=$(date +%s%N)
  kill "$s" "$w"
  wait "$s" "$w" 2> /dev/null || true
  echo "$wide $start $end" | awk '{printf "%.0f", $1 / (($3 - $2) / 1e9)}'
}

printf '| %-5s | %-22s | %-22s |\n' build "run 1, completions/s" "run 2, completions/s"
printf '|%s|%s|%s|\n' "-------" "------------------------" "------------------------"
declare -A rate=()
for turn in 1 2; do
  for build in old new; do
    bin=$old
    [ "$build" = new ] && bin=$new
    rate[$build$turn]=$(one "$bin")
  done
done
for build in old new; do
  printf '| %-5s | %22s | %22s |\n' "$build" "${rate[${build}1]}" "${rate[${build}2]}"
done
