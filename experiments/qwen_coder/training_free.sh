#!/usr/bin/env bash
# Training-free over-refusal baselines on Qwen2.5-Coder-0.5B-Instruct, evaluated on the tuning sets with the
# prompts of experiments/sweeps/qwen_coder/frontier.yaml (100 per set, seed 0, 48 new tokens):
#  - the false-refusal vector (Wang et al., ICLR 2025) ablated, at λ = 1, 0.75, 0.5, 0.25, 0
#    (λ = 1: orthogonal to the refusal direction; 0: the raw pseudo-harmful − harmless difference). The layer
#    is chosen once, at λ = 1, by the selection rules of `mosr direction`; the other λ reuse that layer and
#    position, so λ is the only thing that moves;
#  - the refusal direction (runs/qwen-coder/refusal-dir, layer 15) ablated, as the reference point;
#  - optionally an adapter plus false-refusal ablation: ADAPTER=path LAM=0.5 bash ... (one extra point).
# The prompts behind the vectors are filtered as refusal_direction's filter_train and Wang et al.'s filter_or do
# (filter_prompts: harmful and pseudo-harmful prompts the model refuses, harmless ones it answers). Without the
# filter (FILTER=false) the OR-80K bank's prompts are mostly answered by this model (mean refusal log-odds
# -2.5) and the vector ablates nothing. Filtered, the whole 529-prompt bank (FILTER_POOL) keeps 31 prompts this model refuses: the
# vectors use 24 of them for the means and 6 to score the candidates (N_TRAIN, N_SELECT).
# Re-running resumes: finished folders are skipped, `mosr eval` resumes its own rows.
#   bash experiments/qwen_coder/training_free.sh runs/qwen-fr-filtered
set -euo pipefail
OUT=${1:-runs/qwen-fr-filtered}
FILTER=${FILTER:-true}
N_TRAIN=${N_TRAIN:-24}
N_SELECT=${N_SELECT:-6}
LAMBDAS=${LAMBDAS:-0.50 0.00 0.75 0.25}
M=qwen2.5-coder-0.5b-instruct
SETS=jbb-harmful,advbench,jbb-benign,xstest-safe,self-instruct-heldout
EVAL=(--sets "$SETS" --n 100 --max-new-tokens 48 --seed 0 --batch-size 64 --quiet)
mkdir -p "$OUT"
direction() {  # name, extra --set args...
  local d="$OUT/$1"; shift
  [ -f "$d/direction.json" ] || mosr direction --kind false-refusal --model "$M" --out "$d" \
    --set n_train=$N_TRAIN --set n_select=$N_SELECT --set filter_prompts=$FILTER --set filter_pool=${FILTER_POOL:-32} "$@"
}
evaluate() {  # name, extra eval args...
  local d="$OUT/$1"; shift
  [ -f "$d/metrics.json" ] || mosr eval --model "$M" "${EVAL[@]}" "$@" --out "$d"
}
direction fr-l1.00 --set kl_threshold=0.2 --set lam=1.0
LAYER=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['layer'])" "$OUT/fr-l1.00/direction.json")
echo "false-refusal layer: $LAYER"
evaluate eval-fr-l1.00 --ablate "$OUT/fr-l1.00"
for LAMBDA in $LAMBDAS; do
  direction "fr-l$LAMBDA" --set kl_threshold=null --set "layers=[$LAYER]" --set lam=$LAMBDA
  evaluate "eval-fr-l$LAMBDA" --ablate "$OUT/fr-l$LAMBDA"
done
evaluate eval-refusal-ablate --ablate "${REFUSAL_DIR:-runs/qwen-coder/refusal-dir}"
if [ -n "${ADAPTER:-}" ]; then
  evaluate "eval-adapter-fr-l${LAM:-0.50}" --adapter "$ADAPTER" --ablate "$OUT/fr-l${LAM:-0.50}"
fi
