#!/bin/bash
# Where a chained task's time goes, for one build of `amdahl` on PostgreSQL at default flags
# (a URL without `sslmode`, `amdahl scheduler` + `amdahl worker`, a new database), or with
# AMDAHL_BENCH_STORE=sqlite on SQLite (`amdahl standalone`, a new file):
#
# - CPU per task of each process over ROUNDS runs of a chain of N tasks (from /proc: the
#   worker with and without its children, the scheduler, every PostgreSQL process that lived
#   through the runs, the trigger commands, and the whole machine; on SQLite the worker is
#   the standalone process, scheduler included);
# - the median hand-off (a link's end written to the next link's start written), from the
#   attempts' µs stamps;
# - the fixed cost of a trigger: the median of 9 runs of a chain of 1 and of N + 1, and
#   `amdahl --version` (the process start alone).
#
#   AMDAHL_BENCH_POSTGRES_URL=postgres://…/postgres benches/chain/cost.sh BINARY [N] [ROUNDS]
#   AMDAHL_BENCH_STORE=sqlite benches/chain/cost.sh BINARY [N] [ROUNDS]   (needs `sqlite3`)
#   (AMDAHL_BENCH_TASK=empty for `empty: {}` tasks instead of `shell: "true"`)
set -euo pipefail
bin=$1 n=${2:-40} rounds=${3:-5} task=${AMDAHL_BENCH_TASK:-shell}
store=${AMDAHL_BENCH_STORE:-postgres}
server=${AMDAHL_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d)
trap 'rm -rf "$work"; jobs -p | xargs -r kill 2>/dev/null' EXIT
mkdir "$work/dags" "$work/empty"
chain() {
  echo "dag: $1"
  echo "tasks:"
  for i in $(seq 0 $(($2 - 1))); do
    echo "  t$i:"
    [ "$i" -gt 0 ] && echo "    needs: [t$((i - 1))]"
    if [ "$task" = empty ]; then echo '    empty: {}'; else echo '    shell: "true"'; fi
  done
}
chain chain "$n" > "$work/dags/chain.yaml"
chain one 1 > "$work/dags/one.yaml"
chain longer $((n + 1)) > "$work/dags/longer.yaml"
export AMDAHL_HOME="$work/home"
if [ "$store" = sqlite ]; then
  unset AMDAHL_DATABASE_URL
  "$bin" db migrate > /dev/null
  "$bin" standalone --dags-folder "$work/empty" 2> /dev/null & worker=$!
  scheduler=$worker
else
  export PGOPTIONS="--client-min-messages=warning"
  psql -qX "$server" -c "DROP DATABASE IF EXISTS amdahl_cost" -c "CREATE DATABASE amdahl_cost" > /dev/null
  export AMDAHL_DATABASE_URL="${server%/*}/amdahl_cost"
  "$bin" db migrate > /dev/null
  "$bin" scheduler --dags-folder "$work/empty" 2> /dev/null & scheduler=$!
  "$bin" worker 2> /dev/null & worker=$!
fi
for dag in chain one longer; do "$bin" trigger "$work/dags/$dag.yaml" --wait > /dev/null; done

tick=$(getconf CLK_TCK)
with_children() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
own() { awk '{print $14 + $15}' "/proc/$1/stat"; }
postgres_cpu() {
  local total=0 pid
  for pid in $(pgrep -f "postgres: " || true); do
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2> /dev/null || echo 0)))
  done
  echo "$total"
}
machine() { head -1 /proc/stat | awk '{print $2 + $3 + $4 + $7 + $8 + $9}'; }

w0=$(with_children "$worker") wo0=$(own "$worker") s0=$(with_children "$scheduler")
p0=$(postgres_cpu) m0=$(machine) trigger_ms=0
start=$(date +%s%N)
for _ in $(seq "$rounds"); do
  /usr/bin/time -f "%U %S" -o "$work/time" "$bin" trigger "$work/dags/chain.yaml" --wait > /dev/null
  trigger_ms=$(awk -v t="$trigger_ms" '{print t + ($1 + $2) * 1000}' "$work/time")
done
end=$(date +%s%N)
w1=$(with_children "$worker") wo1=$(own "$worker") s1=$(with_children "$scheduler")
p1=$(postgres_cpu) m1=$(machine)
tasks=$((n * rounds))
per() { awk -v d="$1" -v tick="$tick" -v tasks="$tasks" 'BEGIN {printf "%.2f ms", d * 1000 / tick / tasks}'; }
echo "| $tasks chained \`$task\` tasks | per task |"
echo "|---|---:|"
awk -v d=$((end - start)) -v tasks="$tasks" 'BEGIN {printf "| wall time | %.2f ms |\n", d / 1e6 / tasks}'
echo "| the worker with its children | $(per $((w1 - w0))) |"
echo "| the worker itself | $(per $((wo1 - wo0))) |"
if [ "$store" = postgres ]; then
  echo "| PostgreSQL (its processes) | $(per $((p1 - p0))) |"
  echo "| the scheduler | $(per $((s1 - s0))) |"
fi
awk -v t="$trigger_ms" -v tasks="$tasks" 'BEGIN {printf "| the trigger commands | %.2f ms |\n", t / tasks}'
echo "| the whole machine (all cores) | $(per $((m1 - m0))) |"

# The hand-off from the attempts' µs stamps (migration 0028; builds before it have none):
# one link's end written to the next link's start written, over the measured rounds' runs.
stamps="SELECT a.run_id, CAST(substr(a.task_id, 2) AS int), a.started_at_us, a.finished_at_us
  FROM task_attempts a JOIN runs r ON r.id = a.run_id
  WHERE r.dag_id = 'chain' AND a.started_at_us IS NOT NULL AND a.finished_at_us IS NOT NULL"
if [ "$store" = sqlite ]; then
  sqlite3 -separator ' ' "$AMDAHL_HOME/amdahl.db" "$stamps" > "$work/stamps" 2> /dev/null || true
else
  psql -qXAt "$AMDAHL_DATABASE_URL" -F ' ' -c "$stamps" > "$work/stamps" 2> /dev/null || true
fi
# The nearest-rank percentile P of the numbers on stdin, in ms.
pct() { sort -n | awk -v p="$1" '{v[NR] = $1} END {if (NR) {i = int(NR * p + 0.999); if (i < 1) i = 1; printf "%.3f", v[i] / 1000}}'; }
gaps=$(awk '{s[$1 " " $2] = $3; f[$1 " " $2] = $4} END {for (k in f) {split(k, a, " "); n = a[1] " " (a[2] + 1); if (n in s) print s[n] - f[k]}}' "$work/stamps")
echo
echo "| hand-off, end written → next start written (µs stamps) | |"
echo "|---|---:|"
if [ -n "$gaps" ]; then
  echo "| median of $(echo "$gaps" | wc -l) | $(echo "$gaps" | pct 0.5) ms |"
  echo "| 90th percentile | $(echo "$gaps" | pct 0.9) ms |"
  echo "| (a link itself, start written → end written: median $(awk '{print $4 - $3}' "$work/stamps" | pct 0.5) ms) | |"
else
  echo "| (no µs stamps: a build before migration 0028) | |"
fi

median() {
  local times=() s e
  for _ in $(seq 9); do
    s=$(date +%s%N)
    "$@" > /dev/null
    e=$(date +%s%N)
    times+=($(((e - s) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 5p | awk '{printf "%.1f ms", $1 / 1000}'
}
echo
echo "| trigger to exit (median of 9) | |"
echo "|---|---:|"
echo "| chain of 1 | $(median "$bin" trigger "$work/dags/one.yaml" --wait) |"
echo "| chain of $((n + 1)) | $(median "$bin" trigger "$work/dags/longer.yaml" --wait) |"
echo "| \`amdahl --version\` | $(median "$bin" --version) |"
