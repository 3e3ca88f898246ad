#!/usr/bin/env bash
# Regenerate the real-data tables of docs/benchmarks.md: `spatialmix benchmark` with every peer on the real
# development cases of spatialmix.datasets (STARmap mPFC; Visium mouse brain + H&E), one after the other on
# 2 CPU cores, copying metrics.json, report.md and the figures into docs/benchmarks/<case>/.
# The cases are fetched with pip / apt-get into ~/.cache/spatialmix/cases (nothing is committed).
set -euo pipefail
BIN=${BIN:-.venv/bin}
WORK=${WORK:-/tmp/spatialmix-benchmarks}
mkdir -p "$WORK"
for case in ${CASES:-starmap visium_he}; do
  /usr/bin/time -v "$BIN/python" benchmarks/real_cases.py --case "$case" --out "$WORK/$case" --jobs 2 --quiet \
    > "$WORK/$case.log" 2>&1
  mkdir -p "docs/benchmarks/$case"
  cp "$WORK/$case"/{metrics.json,report.md,case.json} "$WORK/$case"/*.png "docs/benchmarks/$case/"
  grep -E "Elapsed|Maximum resident" "$WORK/$case.log" > "docs/benchmarks/$case/time.txt"
done
