#!/usr/bin/env bash
# The main job on the bundled SmolLM2-135M-Instruct, end to end (14.4 min from a fresh clone on 2 CPU
# cores, setup included: experiments/results/demo/timing.txt):
#   rr and MOSR training (overlap weights computed first) -> evaluation of the base model, rr and MOSR
#   (60 prompts per set) -> representation study (probes, LogitLens) beside the representations before /
#   after -> table + safety / over-refusal trade-off figure.
# Two single-thread workers share the two cores. Each runs `mosr tradeoff --stages train,eval`: the runs
# and points are claimed with lock files, so one worker trains rr and the other MOSR, and then each
# evaluates whatever is trained and not yet taken. The first worker to finish then runs the probe study
# (the longer of the two last jobs), the other the representations before / after (`--stages repr`).
# A last `mosr tradeoff` fills in anything left (none, normally) and writes the report.
# Every stage writes its run folder under $OUT (default runs/demo) and resumes if re-run.
# Needs the benchmark data (MOSR_DATA_DIR or ../shared/data); without it only the offline probe demo runs.
# STUDY_ARGS (e.g. --dry-run) and PROBE_CONFIG change the study / probe stage (the tests use them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
MOSR=".venv/bin/mosr"
PROBE_CONFIG=${PROBE_CONFIG:-probes/smollm2-demo.yaml}
STUDY=("$MOSR" tradeoff --config experiments/studies/demo.yaml --out "$OUT/study" ${STUDY_ARGS:-})
mkdir -p "$OUT"

if ! .venv/bin/python -c "from mosr.datasets import data_dir; data_dir()" 2>/dev/null; then
  echo "No benchmark data directory (set MOSR_DATA_DIR). Running the offline probe study on the bundled demo set only."
  "$MOSR" probe --config probes/demo.yaml --out "$OUT/probe-demo"
  exit 0
fi

SECONDS=0
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

echo "== 1/3 training rr and MOSR side by side, then evaluations, then the probe study and the"
echo "       representations before / after (logs $OUT/worker-1.log, $OUT/worker-2.log)"
rm -rf "$OUT"/.claim-*  # claims of an earlier, interrupted demo (every job below resumes)
claim() { mkdir "$OUT/.claim-$1" 2>/dev/null; }  # atomic: exactly one worker gets each job
worker() {
  OMP_NUM_THREADS=1 "${STUDY[@]}" --stages train,eval
  if claim probe; then OMP_NUM_THREADS=1 "$MOSR" probe --config "$PROBE_CONFIG" --out "$OUT/probe"; fi
  if claim repr; then OMP_NUM_THREADS=1 "${STUDY[@]}" --stages repr; fi
}
for w in 1 2; do
  worker >"$OUT/worker-$w.log" 2>&1 &
  pids+=("$!")
done

for _ in 1 2; do  # the next worker to finish; either one failing stops both (the EXIT trap)
  if ! wait -n; then
    echo "a worker failed; the end of its log:" >&2
    tail -n 4 "$OUT/worker-1.log" "$OUT/worker-2.log" >&2
    exit 1
  fi
done
echo "   trained, evaluated and probed in $((SECONDS / 60)) min $((SECONDS % 60)) s"

echo "== 2/3 anything left (normally nothing), table and figures"
"${STUDY[@]}"
rm -rf "$OUT"/.claim-*
echo "== 3/3 done in $((SECONDS / 60)) min $((SECONDS % 60)) s: $OUT/study/summary.md (table), $OUT/study/frontier.png (trade-off),"
echo "     $OUT/probe/figures/ (probe figures: probes, geometry, LogitLens, over-refusal risk)"
