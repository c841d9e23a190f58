#!/usr/bin/env bash
# Cells per hour of benchmarks/sweep-scaling.yaml on the Ray executor: W workers (actors), each
# engine on T CPU threads, generation cache off, into a fresh results folder each time.
#   bash benchmarks/sweep_scaling.sh W T
# The wall time printed includes starting the local Ray instance and each actor's engine.
set -euo pipefail
workers=${1:?workers}
threads=${2:?threads per engine}
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
started=$(date +%s.%N)
TSBENCH_GENERATION_CACHE=off tsbench sweep benchmarks/sweep-scaling.yaml --executor ray \
  --workers "$workers" --cpus-per-worker 1 --threads "$threads" --results "$out" --no-progress 2>/dev/null \
  | tail -1
python3 - "$started" <<'PY'
import sys, time
wall = time.time() - float(sys.argv[1])
print(f"process wall {wall:.1f} s: {8 / wall * 3600:.0f} cells/hour")
PY
