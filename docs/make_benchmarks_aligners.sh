#!/usr/bin/env bash
# Regenerate the "other aligners" numbers of docs/benchmarks.md: MoDAmix, calibration and scMODAL (with Harmony
# and the raw inputs as references) on the bundled sample and, when given a second dataset, on it too. scMODAL
# runs 2,000 steps here (2,000 took 25-31 minutes per dataset on one CPU core, so the paper's 10,000 would take
# 2-2.5 hours); pass
# SCMODAL_STEPS=10000 to use the paper's count. Run from the repository root.
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-/tmp/spatialmix-benchmarks}
STEPS=${SCMODAL_STEPS:-2000}
mkdir -p "$WORK"
for name in ${DATASETS:-bundled}; do
  data=$([ "$name" = bundled ] && echo sample_data || echo "$WORK/$name")
  OMP_NUM_THREADS=1 $BIN/python - "$name" "$data" "$WORK/aligners_$name" "$STEPS" <<'PY'
import sys
from spatialmix.benchmark import format_benchmark, iter_benchmark
from spatialmix.progress import run
name, data, out, steps = sys.argv[1:5]
m = run(iter_benchmark(data, out, models=["modamix", "calibration", "scmodal", "harmony"], translation=False,
                       train={"scmodal": {"max_steps": int(steps)}}, overwrite=True))
print(format_benchmark(m))
PY
  mkdir -p "docs/benchmarks/aligners_$name"
  cp "$WORK/aligners_$name"/{metrics.json,metrics.csv,annotation_per_class.csv,report.md} "$WORK/aligners_$name"/*.png \
    "docs/benchmarks/aligners_$name/"
done
