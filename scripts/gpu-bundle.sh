#!/usr/bin/env bash
# Packages the tests that need a CUDA device (`#[ignore = "needs a CUDA device"]`) for a machine
# that has a GPU, the CUDA driver and toolkit, but no Rust toolchain.
#
#   scripts/gpu-bundle.sh            # build here (release; PROFILE=dev for a quick check), write gpu-bundle/
#   # copy gpu-bundle/ to the GPU machine, then there:
#   OUT=/some/folder bash gpu-bundle/run.sh
#
# run.sh unpacks each test binary, runs its ignored tests, keeps each log under $OUT and prints
# a table (binary, passed, failed) that it also writes to $OUT/summary.md; then it runs the GPU
# benchmark (executors/benches/gpu.rs; SKIP_BENCH=1 skips it, AMDAHL_BENCH_MAX_MB and
# AMDAHL_BENCH_KNN_BASE shrink it) into $OUT/bench.md. It exits non-zero if
# any test failed or none ran. The binaries are built here (x86-64, this machine's glibc, which
# is older than the GPU machine's, so they run there) in release mode, stripped and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin"

profile=${PROFILE:-release}
echo "building the test binaries ($profile)…" >&2
cargo test --profile "$profile" --workspace --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
' | sort -u > "$bundle/executables.txt"

count=0
while read -r exe; do
  # Only binaries that hold at least one ignored test travel.
  if ! "$exe" --list --ignored 2>/dev/null | grep -q ': test$'; then
    continue
  fi
  name=$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')
  cp "$exe" "$bundle/bin/$name"
  strip "$bundle/bin/$name"
  gzip -9 "$bundle/bin/$name"
  count=$((count + 1))
  echo "  $name: $("$exe" --list --ignored 2>/dev/null | grep -c ': test$') ignored test(s)" >&2
done < "$bundle/executables.txt"
rm "$bundle/executables.txt"
if [ "$count" -eq 0 ]; then
  echo "no test binary has ignored tests" >&2
  exit 1
fi

# The GPU benchmark (ceilings, Q6 sweep, knn): one binary, run after the tests.
echo "building the GPU benchmark ($profile)…" >&2
bench_profile=$profile
[ "$profile" = "dev" ] && bench_profile=bench
bench_exe=$(cargo bench --profile "$bench_profile" -p amdahl-executors --bench gpu --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and "bench" in m.get("target", {}).get("kind", []) and m.get("executable"):
        print(m["executable"])
' | tail -n 1)
mkdir -p "$bundle/bench"
cp "$bench_exe" "$bundle/bench/gpu"
strip "$bundle/bench/gpu"
gzip -9 "$bundle/bench/gpu"

cat > "$bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the packaged GPU tests; see scripts/gpu-bundle.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/out}
mkdir -p "$out"
work=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
status=0
ran=0
{
  echo "| binary | passed | failed |"
  echo "|---|---|---|"
} > "$out/summary.md"
for gz in "$here"/bin/*.gz; do
  name=$(basename "$gz" .gz)
  gunzip -c "$gz" > "$work/$name"
  chmod +x "$work/$name"
  (cd "$here/.." && "$work/$name" --ignored --test-threads=1) > "$out/$name.log" 2>&1
  code=$?
  passed=$(grep -Eo '[0-9]+ passed' "$out/$name.log" | awk '{s+=$1} END {print s+0}')
  failed=$(grep -Eo '[0-9]+ failed' "$out/$name.log" | awk '{s+=$1} END {print s+0}')
  ran=$((ran + passed + failed))
  [ "$code" -ne 0 ] && status=1
  echo "| $name | $passed | $failed |" >> "$out/summary.md"
done
if [ -f "$here/bench/gpu.gz" ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  gunzip -c "$here/bench/gpu.gz" > "$work/gpu-bench"
  chmod +x "$work/gpu-bench"
  (cd "$here/.." && "$work/gpu-bench") > "$out/bench.md" 2> "$out/bench.log" || status=1
fi
rm -rf "$work"
echo "GPU: $(cat "$out/gpu.txt")"
cat "$out/summary.md"
[ -f "$out/bench.md" ] && cat "$out/bench.md"
if [ "$ran" -eq 0 ]; then
  echo "no GPU test ran"
  exit 1
fi
exit "$status"
RUN
chmod +x "$bundle/run.sh"
du -sh "$bundle" >&2
