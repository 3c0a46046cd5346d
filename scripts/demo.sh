#!/usr/bin/env bash
# The main job on the bundled SmolLM2-135M-Instruct, end to end (about 30 minutes on 2 CPU cores):
#   representation study (probes, LogitLens) -> rr and MOSR training (overlap weights computed first)
#   -> evaluation of the base model, rr and MOSR (60 prompts per set) -> representations before /
#   after -> table + safety / over-refusal trade-off figure.
# Every stage writes its run folder under $OUT (default runs/demo) and resumes if re-run.
# Needs the benchmark data (MOSR_DATA_DIR or ../shared/data); without it only the offline probe demo runs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
MOSR=".venv/bin/mosr"
mkdir -p "$OUT"

if ! .venv/bin/python -c "from mosr.datasets import data_dir; data_dir()" 2>/dev/null; then
  echo "No benchmark data directory (set MOSR_DATA_DIR). Running the offline probe study on the bundled demo set only."
  "$MOSR" probe --config probes/demo.yaml --out "$OUT/probe-demo"
  exit 0
fi

echo "== 1/2 representation study (probes, geometry, LogitLens, over-refusal risk)"
"$MOSR" probe --config probes/smollm2.yaml --out "$OUT/probe"
echo "== 2/2 reduced trade-off study: train rr + MOSR, evaluate base / rr / MOSR, representations, table"
"$MOSR" study --config experiments/studies/demo.yaml --out "$OUT/study"
echo "done: $OUT/study/summary.md (table), $OUT/study/frontier.png (trade-off), $OUT/probe/figures/ (probe figures)"
