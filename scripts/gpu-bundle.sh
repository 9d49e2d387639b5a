#!/usr/bin/env bash
# Packages the tests that need a CUDA device (`#[ignore = "needs a CUDA device"]`) for a machine
# that has a GPU, the CUDA driver and toolkit, but no Rust toolchain.
#
#   scripts/gpu-bundle.sh            # build here (release; PROFILE=dev for a quick check), write gpu-bundle/
#   # copy gpu-bundle/ to the GPU machine, then there:
#   OUT=/some/folder bash gpu-bundle/run.sh
#
# run.sh (scripts/gpu-run.sh) unpacks each test binary, runs its ignored tests, then the GPU
# benchmark (executors/benches/gpu.rs), and writes $OUT/summary.md, $OUT/bench.md and
# $OUT/logs.tgz; it exits non-zero if any test failed or none ran. Only the crates named in
# PACKAGES are built (default `-p amdahl-executors`, where every GPU test lives). The binaries
# are built here (x86-64, this machine's glibc, which is older than the GPU machine's, so they
# run there) in release mode, stripped and xz-compressed (the bundle must stay
# well under 64 MiB to travel).
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin"

profile=${PROFILE:-release}
# The `amdahl` binary (release, stripped, xz) for the user's path on the GPU machine.
bundle_cli() {
  echo "building the amdahl binary (release)…" >&2
  cargo build --release --bin amdahl
  cp target/release/amdahl "$bundle/amdahl"
  strip "$bundle/amdahl"
  xz -9 -T0 "$bundle/amdahl"
}
if [ "${CLI:-0}" = only ]; then
  bundle_cli
  cp scripts/gpu-run.sh "$bundle/run.sh"
  chmod +x "$bundle/run.sh"
  du -sh "$bundle" >&2
  exit 0
fi
echo "building the test binaries ($profile)…" >&2
cargo test --profile "$profile" ${PACKAGES:--p amdahl-executors} --no-run --message-format=json 2>/dev/null \
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
  # (The list is read whole first: `grep -q` stopping early would make the lister fail under
  # pipefail.)
  ignored=$("$exe" --list --ignored 2>/dev/null | grep -c ': test$' || true)
  if [ "${ignored:-0}" -eq 0 ]; then
    continue
  fi
  name=$(basename "$exe" | sed 's/-[0-9a-f]\{16\}$//')
  cp "$exe" "$bundle/bin/$name"
  strip "$bundle/bin/$name"
  xz -9 -T0 "$bundle/bin/$name"
  count=$((count + 1))
  echo "  $name: $ignored ignored test(s)" >&2
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
xz -9 -T0 "$bundle/bench/gpu"

# CLI=1: also the `amdahl` binary, for the user's path on the GPU machine (calibrate, run an
# example whose tasks are placed, runs show); CLI=only (above) bundles that alone.
if [ "${CLI:-0}" != 0 ]; then
  bundle_cli
fi
cp scripts/gpu-run.sh "$bundle/run.sh"
chmod +x "$bundle/run.sh"
du -sh "$bundle" >&2
