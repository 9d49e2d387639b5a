#!/bin/bash
# Two builds of `amdahl`, taking turns, at default flags: a chain of 40 `shell: "true"` tasks
# run by `amdahl standalone` and by `amdahl scheduler` + `amdahl worker` on SQLite, and (with
# AMDAHL_BENCH_POSTGRES_URL set) by `amdahl scheduler` + `amdahl worker` on PostgreSQL (a URL
# without `sslmode`, a new database each time), timed from `amdahl trigger --wait` to its exit
# (the issue's measure), ROUNDS times each after a warm-up run. Prints the median and the
# range per task for each build and service.
#
#   benches/chain/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
set -euo pipefail
old=$1 new=$2 rounds=${3:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"; jobs -p | xargs -r kill 2>/dev/null' EXIT
mkdir "$work/dags" "$work/empty"
chain() {
  echo "dag: $1"
  echo "tasks:"
  for i in $(seq 0 $(($2 - 1))); do
    echo "  t$i:"
    [ "$i" -gt 0 ] && echo "    needs: [t$((i - 1))]"
    echo '    shell: "true"'
  done
}
chain warm 2 > "$work/dags/warm.yaml"
chain chain40 40 > "$work/dags/chain40.yaml"

# Prints ROUNDS times per task in microseconds, one per line.
one() {
  local bin=$1 topology=$2 home
  home=$(mktemp -d "$work/home.XXXX")
  export AMDAHL_HOME=$home
  unset AMDAHL_DATABASE_URL
  if [ "$topology" = postgres ]; then
    psql -qX "$server" -c "DROP DATABASE IF EXISTS amdahl_chain_ab" \
      -c "CREATE DATABASE amdahl_chain_ab" > /dev/null
    export AMDAHL_DATABASE_URL="${server%/*}/amdahl_chain_ab"
  fi
  "$bin" db migrate > /dev/null
  local pids=()
  if [ "$topology" = standalone ]; then
    "$bin" standalone --dags-folder "$work/empty" 2> /dev/null & pids+=($!)
  else
    "$bin" scheduler --dags-folder "$work/empty" 2> /dev/null & pids+=($!)
    "$bin" worker 2> /dev/null & pids+=($!)
  fi
  "$bin" trigger "$work/dags/warm.yaml" --wait > /dev/null
  for _ in $(seq "$rounds"); do
    local start end
    start=$(date +%s%N)
    "$bin" trigger "$work/dags/chain40.yaml" --wait > /dev/null
    end=$(date +%s%N)
    echo $(((end - start) / 1000 / 40))
  done
  kill "${pids[@]}"
  wait "${pids[@]}" 2> /dev/null || true
}

server=${AMDAHL_BENCH_POSTGRES_URL:-}
export PGOPTIONS="--client-min-messages=warning"
topologies=(standalone "scheduler + worker")
[ -n "$server" ] && topologies+=(postgres)

printf '| %-28s | %-5s | %-22s | %-16s |\n' service build "median ms per task" "range"
printf '|%s|%s|%s|%s|\n' "------------------------------" "-------" "------------------------" "------------------"
for topology in "${topologies[@]}"; do
  declare -A times=()
  # Builds take turns, so a machine that slows down slows both.
  for _ in 1 2; do
    for build in old new; do
      bin=$old
      [ "$build" = new ] && bin=$new
      times[$build]+="$(one "$bin" "$topology") "
    done
  done
  for build in old new; do
    # shellcheck disable=SC2086
    sorted=$(printf '%s\n' ${times[$build]} | sort -n)
    n=$(echo "$sorted" | wc -l)
    median=$(echo "$sorted" | sed -n "$(((n + 1) / 2))p")
    label="sqlite, $topology"
    [ "$topology" = postgres ] && label="postgres, scheduler + worker"
    printf '| %-28s | %-5s | %22.2f | %6.2f – %-7.2f |\n' "$label" "$build" \
      "$(echo "$median / 1000" | bc -l)" \
      "$(echo "$(echo "$sorted" | head -1) / 1000" | bc -l)" \
      "$(echo "$(echo "$sorted" | tail -1) / 1000" | bc -l)"
  done
  unset times
done
