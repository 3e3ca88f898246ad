#!/usr/bin/env bash
# Regenerate the numbers and figures of docs/benchmarks.md: `spatialmix benchmark` on the bundled sample and on
# a `small` dataset simulated with seed 7 (about 15 minutes each on 2 CPU cores). Run from the repository root.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-/tmp/spatialmix-benchmarks}
mkdir -p "$WORK"
$BIN/spatialmix --quiet simulate --out "$WORK/seed7" --seed 7 --samples 4 --size small
for name in bundled seed7; do
  data=$([ "$name" = bundled ] && echo sample_data || echo "$WORK/seed7")
  OMP_NUM_THREADS=2 $BIN/spatialmix --quiet benchmark --data "$data" --models mima,pca,harmony \
    --out "$WORK/$name" --overwrite > "$WORK/$name.log" 2>&1
  mkdir -p "docs/benchmarks/$name"
  cp "$WORK/$name"/{metrics.json,metrics.csv,annotation_per_class.csv,report.md} "$WORK/$name"/*.png "docs/benchmarks/$name/"
done
