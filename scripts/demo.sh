#!/usr/bin/env bash
# The main job on the bundled SmolLM2-135M-Instruct, end to end (about 25 minutes on 2 CPU cores):
#   representation study (probes, LogitLens) -> rr and MOSR training (overlap weights computed first)
#   -> evaluation of the base model, rr and MOSR (60 prompts per set) -> representations before /
#   after -> table + safety / over-refusal trade-off figure.
# Two single-thread processes share the two cores: one trains rr then MOSR, the other runs the probe
# study and then evaluates the base model and each adapter as soon as it is saved (`mosr study
# --stages eval`); a last `mosr study` evaluates what is left, with both threads, and writes the report.
# Every stage writes its run folder under $OUT (default runs/demo) and resumes if re-run.
# Needs the benchmark data (MOSR_DATA_DIR or ../shared/data); without it only the offline probe demo runs.
# STUDY_ARGS (e.g. --dry-run) and PROBE_CONFIG change the study / probe stage (the tests use them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
MOSR=".venv/bin/mosr"
PROBE_CONFIG=${PROBE_CONFIG:-probes/smollm2.yaml}
STUDY=("$MOSR" study --config experiments/studies/demo.yaml --out "$OUT/study" ${STUDY_ARGS:-})
mkdir -p "$OUT"

if ! .venv/bin/python -c "from mosr.datasets import data_dir; data_dir()" 2>/dev/null; then
  echo "No benchmark data directory (set MOSR_DATA_DIR). Running the offline probe study on the bundled demo set only."
  "$MOSR" probe --config probes/demo.yaml --out "$OUT/probe-demo"
  exit 0
fi

SECONDS=0
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

echo "== 1/3 training rr and MOSR ($OUT/study/train, log $OUT/train.log), beside it:"
OMP_NUM_THREADS=1 "${STUDY[@]}" --stages train >"$OUT/train.log" 2>&1 &
train=$!
pids+=("$train")

echo "== 2/3 representation study (probes, geometry, LogitLens, over-refusal risk), then evaluations as adapters appear"
(
  OMP_NUM_THREADS=1 "$MOSR" probe --config "$PROBE_CONFIG" --out "$OUT/probe"
  while kill -0 "$train" 2>/dev/null; do
    OMP_NUM_THREADS=1 "${STUDY[@]}" --stages eval >>"$OUT/eval.log" 2>&1
    sleep 10
  done
) &
side=$!
pids+=("$side")

if ! wait "$train"; then
  echo "training failed; see $OUT/train.log:" >&2
  tail -n 5 "$OUT/train.log" >&2
  exit 1
fi
if ! wait "$side"; then
  echo "the probe study or an evaluation failed; see the output above and $OUT/eval.log" >&2
  exit 1
fi
echo "   trained and probed in $((SECONDS / 60)) min $((SECONDS % 60)) s"

echo "== 3/3 evaluations left, representations before / after, table and figures"
"${STUDY[@]}"
echo "done in $((SECONDS / 60)) min $((SECONDS % 60)) s: $OUT/study/summary.md (table), $OUT/study/frontier.png (trade-off),"
echo "     $OUT/study/lens.png (LogitLens before / after), $OUT/probe/figures/ (probe figures)"
