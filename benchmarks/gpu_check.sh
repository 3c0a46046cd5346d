#!/usr/bin/env bash
# GPU check: the three speed numbers of the toolkit on *your* GPU, in one command.
#
#   1. capture / forward ratio   benchmarks/capture.py      (mosr.capture vs a bare forward, all layers)
#   2. train-step time           benchmarks/train_step.py   (s / step per variant, peak GPU memory)
#   3. score vs generate speed   benchmarks/generation.py   (refusal score vs greedy generation)
#
# STATUS: NOT YET RUN ON A GPU. The script and the --device / --dtype flags of the three benchmarks were
# written and checked on a CPU only (tests/test_gpu_readiness.py runs this script with DEVICE=cpu on a tiny
# model). Whoever runs it first on a GPU: commit $OUT/summary.md and replace this note (here and in
# docs/training.md, "Papers' models on GPUs") with the machine and the numbers.
#
# Usage (from anywhere; paths are relative to the repository root):
#   bash benchmarks/gpu_check.sh                                               # bundled SmolLM2-135M, cuda, bf16
#   MODEL=meta-llama/Meta-Llama-3-8B-Instruct bash benchmarks/gpu_check.sh     # a papers' model (downloads it)
#   DEVICE=cuda:1 DTYPE=float32 OUT=runs/bench/gpu-fp32 bash benchmarks/gpu_check.sh
# Settings (environment): MODEL, DEVICE (cuda), DTYPE (bfloat16), OUT (runs/bench/gpu), N (256 capture
# prompts), GEN_N (64 generation prompts), BATCH (32), REPEATS (5), STEPS (5), WARMUP (2), SEQ (128),
# VARIANTS (all train-step variants), PY (.venv/bin/python, else python).
# Writes $OUT/env.json, capture.json, train_step/train_step.json, generation.json and summary.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
MODEL=${MODEL:-smollm2-135m-instruct}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
OUT=${OUT:-runs/bench/gpu}
N=${N:-256}
GEN_N=${GEN_N:-64}
BATCH=${BATCH:-32}
REPEATS=${REPEATS:-5}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
SEQ=${SEQ:-128}
VARIANTS=${VARIANTS:-rr rr_nocache rr_full mosr_no_aug rr_mix mosr}
export TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

# the machine, and a clear stop when the GPU asked for is not there
DEVICE="$DEVICE" "$PY" - "$OUT/env.json" <<'PYEOF'
import json, os, platform, sys
import torch
device = os.environ["DEVICE"]
env = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
       "machine": platform.machine()}
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit(f"gpu_check: DEVICE={device} but torch.cuda.is_available() is False (torch {torch.__version__}; "
                 "install a CUDA build of torch: TORCH_SPEC in scripts/setup.sh)")
    props = torch.cuda.get_device_properties(torch.device(device))
    env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
               bf16_supported=torch.cuda.is_bf16_supported())
json.dump(env, open(sys.argv[1], "w"), indent=2)
print("gpu_check:", env)
PYEOF

# the shared benchmark data when present, else the bundled demo prompts
DATA=${MOSR_DATA_DIR:-../shared/data}
if [ -d "$DATA/refusal_direction" ]; then TRAIN_DATA=(--data-dir "$DATA"); GEN_SET=xstest; else TRAIN_DATA=(--demo-data); GEN_SET=demo; fi

echo "== 1/3 capture vs forward ($MODEL, $DEVICE, $DTYPE)"
"$PY" benchmarks/capture.py --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --n "$N" --batch-size "$BATCH" \
    --repeats "$REPEATS" --out "$OUT/capture.json"

echo "== 2/3 train step"
# shellcheck disable=SC2086  # VARIANTS is a word list
"$PY" benchmarks/train_step.py --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --seq "$SEQ" --steps "$STEPS" \
    --warmup "$WARMUP" --variants $VARIANTS "${TRAIN_DATA[@]}" --out "$OUT/train_step"

echo "== 3/3 refusal score vs generation"
"$PY" benchmarks/generation.py --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --set "$GEN_SET" --n "$GEN_N" \
    --skip-single --out "$OUT/generation.json"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
env, cap = json.loads((out / "env.json").read_text()), json.loads((out / "capture.json").read_text())
step, gen = json.loads((out / "train_step" / "train_step.json").read_text()), json.loads((out / "generation.json").read_text())
lines = [f"# GPU check: {cap['model']} on {env.get('gpu', env['device'])} ({cap['dtype']}, torch {env['torch']})", "",
         f"- capture / bare forward: {cap['ratio_vs_bare']['capture']:.3f} (hooked forward alone "
         f"{cap['ratio_vs_bare']['hooks-forward']:.3f}); {cap['prompts']} prompts, all {cap['layers']} layers, "
         f"batch {cap['batch_size']}, median of {cap['repeats']}",
         f"- refusal score vs generation: score is {gen['score_vs_generation_speed']:.1f}x faster "
         f"({gen['n']} prompts, {gen['max_new_tokens']} new tokens)", "",
         "| train-step variant | s / step | peak GPU MiB | tokens |", "|---|---|---|---|"]
for name, r in step["results"].items():
    lines.append(f"| {name} | {r['median_s']:.3f} | {r.get('peak_gpu_mib', '-')} | {r['tokens']} |")
lines += ["", "| ratio | value | goal |", "|---|---|---|"]
for name, r in step["ratios"].items():
    if r["value"] is not None:
        lines.append(f"| {name} | {r['value']:.3f} | {r['goal'] if r['goal'] is not None else '-'} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwrote {out / 'summary.md'}")
PYEOF
