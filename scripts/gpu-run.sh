#!/usr/bin/env bash
# Runs the packaged GPU tests and benchmark on a machine with a GPU, the CUDA driver and
# toolkit but no Rust; scripts/gpu-bundle.sh copies this file into the bundle as run.sh.
#
#   OUT=/some/folder bash gpu-bundle/run.sh
#
# Writes (at most five files, so that they fit what a remote runner sends back):
#   $OUT/summary.md  the environment, a table (binary, passed, failed) and each failure
#   $OUT/bench.md    the benchmark's tables (SKIP_BENCH=1 skips it; AMDAHL_BENCH_MAX_MB,
#                    AMDAHL_BENCH_KNN_BASE and AMDAHL_BENCH_KNN_QUERIES shrink it)
#   $OUT/profile.json  the machine's calibrated profile (as `amdahl calibrate` measures it)
#   $OUT/cli.md      with the `amdahl` binary in the bundle (CLI=1): the user's path
#   $OUT/logs.tgz    every log in full
# SKIP_TESTS=1 runs the benchmark alone. Exits non-zero if any test failed, none ran (unless
# skipped), or the benchmark failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
logs=$(mktemp -d)
work=$(mktemp -d)
test_timeout=${TEST_TIMEOUT:-300}
bench_timeout=${BENCH_TIMEOUT:-240}

# cudarc opens libcuda.so.1, libnvrtc.so and libcublas.so by those names (or .so.12/.11);
# a CUDA 13 toolkit ships libnvrtc.so.13, so link the plain names to what this machine has.
mkdir -p "$work/lib"
dirs=""
for name in nvrtc cublas cublasLt; do
  found=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    f=$(ls "$d"/lib$name.so* 2>/dev/null | grep -v '\.alt\.' | sort | head -n 1)
    if [ -n "$f" ]; then found=$f; break; fi
  done
  if [ -z "$found" ]; then
    found=$(timeout 30 find / -xdev -name "lib$name.so*" -not -name '*.alt.*' 2>/dev/null | sort | head -n 1)
  fi
  if [ -n "$found" ]; then
    ln -sf "$found" "$work/lib/lib$name.so"
    dirs="$dirs:$(dirname "$found")"
  fi
  echo "lib$name: ${found:-not found}" >> "$logs/env.txt"
done
export LD_LIBRARY_PATH="$work/lib$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 2
  nproc
} >> "$logs/env.txt"

status=0
ran=0
{
  echo "## Environment"
  echo '```'
  cat "$logs/env.txt"
  echo '```'
  echo
  echo "| binary | passed | failed | exit |"
  echo "|---|---|---|---|"
} > "$out/summary.md"
failures=""
# xz if the machine has it, else Python's lzma module.
unpack() {
  if command -v xz > /dev/null; then
    xz -dc "$1" > "$2"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
  chmod +x "$2"
}
for packed in "$here"/bin/*.xz; do
  [ "${SKIP_TESTS:-0}" = 1 ] && break
  name=$(basename "$packed" .xz)
  unpack "$packed" "$work/$name"
  # Each test in a process of its own, as nextest runs them: the GPU fault tests leave their
  # process's GPU lost on purpose, which must not reach the tests after them.
  : > "$logs/$name.log"
  code=0
  for test in $("$work/$name" --list --ignored 2>/dev/null | sed -n 's/: test$//p'); do
    (cd "$here/.." && timeout "$test_timeout" "$work/$name" --ignored --exact "$test" --nocapture) \
      >> "$logs/$name.log" 2>&1 || code=$?
  done
  passed=$(grep -Eo '[0-9]+ passed' "$logs/$name.log" | awk '{s+=$1} END {print s+0}')
  failed=$(grep -Eo '[0-9]+ failed' "$logs/$name.log" | awk '{s+=$1} END {print s+0}')
  ran=$((ran + passed + failed))
  [ "$code" -ne 0 ] && status=1
  echo "| $name | $passed | $failed | $code |" >> "$out/summary.md"
  if [ "$code" -ne 0 ]; then
    failures="$failures
### $name (exit $code)
\`\`\`
$(grep -E -A 40 "panicked at|^error|Error" "$logs/$name.log" | head -c 6000)
$(tail -n 15 "$logs/$name.log")
\`\`\`"
  fi
done
echo "$failures" >> "$out/summary.md"
if [ -f "$here/bench/gpu.xz" ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  export AMDAHL_BENCH_PROFILE_OUT="$out/profile.json"
  unpack "$here/bench/gpu.xz" "$work/gpu-bench"
  (cd "$here/.." && timeout "$bench_timeout" "$work/gpu-bench") > "$out/bench.md" 2> "$logs/bench.log" \
    || { status=1; echo "benchmark failed: $(tail -n 5 "$logs/bench.log")" >> "$out/bench.md"; }
fi
# The user's path, when the bundle holds the `amdahl` binary: calibrate, run examples whose
# `device: auto` tasks are placed on this machine, show the runs (placement, predictions,
# where the time went), explain against the stored profile.
if [ -f "$here/amdahl.xz" ]; then
  unpack "$here/amdahl.xz" "$work/amdahl"
  home=$(mktemp -d)
  {
    cd "$here/.." || exit 1
    a() { echo "\$ amdahl $*"; AMDAHL_HOME="$home" timeout 300 "$work/amdahl" "$@" 2>&1; echo "(exit $?)"; }
    a devices
    a calibrate --quick
    a run dags/examples/vectors.yaml
    a runs show 1
    # A query split into parts that the CPU and the GPU share, checked against the whole query.
    a run dags/examples/sharded.yaml --param sf=1
    a runs show 2
    a tasks logs 2 q1_split
    # The same DAG twice: the second run's predictions include what the first taught.
    a run dags/examples/tpch.yaml --param sf=1
    a run dags/examples/tpch.yaml --param sf=1
    a runs show 3
    a runs show 4
    a explain dags/examples/tpch.yaml --param sf=1
    a explain dags/examples/tpch.yaml --param sf=10
  } > "$out/cli.md" 2>&1
  grep -q "(exit [1-9]" "$out/cli.md" && status=1
fi
tar czf "$out/logs.tgz" -C "$logs" .
rm -rf "$work" "$logs"
cat "$out/summary.md"
[ -f "$out/bench.md" ] && cat "$out/bench.md"
[ -f "$out/cli.md" ] && cat "$out/cli.md"
if [ "$ran" -eq 0 ] && [ "${SKIP_TESTS:-0}" != 1 ] && [ ! -f "$here/amdahl.xz" ]; then
  echo "no GPU test ran"
  exit 1
fi
exit "$status"
