"""Build and execute the five use-case notebooks of ``notebooks/`` from the cells below.

    .venv/bin/python notebooks/build.py            # all five, in order (03 before 04: 04 reuses 03's adapter)
    .venv/bin/python notebooks/build.py 01 02      # only the named ones
    .venv/bin/python notebooks/build.py 03 --markdown-only   # prose edits only: keep the stored outputs

=====================  ===========================================================================
notebook               what it shows (bundled SmolLM2-135M-Instruct, shared benchmark data)
=====================  ===========================================================================
01_probing             capture, per-layer probes, how over-refusal prompts are classified, PCA view
02_logit_lens          layer-wise decoding of benign / harmful / over-refusal prompts, refusal − compliance mass
03_weighted_training   overlap-aware weights, then a short MOSR run with the weighted loss and its loss curves
04_evaluation          base model vs an adapter: table and safety / over-refusal trade-off plot
05_steering            the refusal direction; ablate / steer / orthogonalize on it, and their guarantees
=====================  ===========================================================================

Each notebook is executed top to bottom with nbclient (600 s per cell at most) in the repository root
and written with its outputs; an error in any cell stops the build and leaves the committed notebook as
it was. Every notebook keeps its samples small (n is stated in its prose) so that it runs in a few
minutes on 2 CPU cores. Artefacts (figures, run folders) go to ``runs/notebooks/<notebook>/``, or under
``$MOSR_NOTEBOOK_OUT`` when set (the tests use a temporary folder). The data directory is
``$MOSR_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

Cells = list[tuple[str, str]]


def setup_cell(name: str) -> str:
    """The first code cell of every notebook: imports, output folder, the bundled model."""
    return f"""import os, time, warnings
warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm without ipywidgets
from pathlib import Path
import torch
import transformers
import mosr
from mosr import datasets, plots
from IPython.display import Image, Markdown, display

T0 = time.perf_counter()
transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
OUT = Path(os.environ.get('MOSR_NOTEBOOK_OUT', 'runs/notebooks')) / '{name}'
OUT.mkdir(parents=True, exist_ok=True)
print('data directory:', datasets.resolved_data_dir(None))
print('figures and run folders:', OUT)
lm = mosr.load('smollm2-135m-instruct', device='cpu')
lm"""


def timing_cell() -> str:
    return """print(f'notebook executed in {time.perf_counter() - T0:.0f} s')"""


# --- 01: probing ---------------------------------------------------------------------------------------

NB01: Cells = [
    ("md", """# 01 · Probing the safety representation

MOSR's premise is that over-refusal is visible in the model's hidden states: prompts that *look*
harmful but are benign (XSTest-safe, OR-Bench-Hard) sit on the boundary between benign and malicious
prompts. This notebook checks that on the bundled **SmolLM2-135M-Instruct**:

1. capture the post-instruction hidden state at every layer;
2. fit one linear probe per layer (benign vs harmful) and measure it on held-out prompts;
3. score the over-refusal prompts with those probes: how many does each layer call malicious?
4. look at the geometry: a PCA plane fitted on benign + harmful, and each group's position on the
   benign → harmful centroid axis.

**Data** (seeded samples, seed 0), **n = 60 prompts per group**: benign = `rd-harmless-test`
(Alpaca instructions), harmful = `rd-harmful-test` (JailbreakBench + HarmBench + StrongREJECT),
over-refusal = `xstest-safe` and `orbench-hard`. With 60 prompts a rate has a 95% interval of about
±12 points, so read the curves for their shape, not their third digit. The full-size study (200 + 50
prompts per side, all of XSTest-safe) is `mosr probe --config probes/smollm2.yaml`, documented in
`docs/probes.md`. Built and executed by `notebooks/build.py`."""),
    ("code", setup_cell("01_probing")),
    ("md", """## 1. Capture

`mosr.capture` chat-formats each prompt with the model's template and the assistant header and
returns the residual stream after every decoder block at the **last prompt token** (the
post-instruction position): `Tensor[prompt layer d_model]`. Layer `i` is the output of block `i`
(0-based; SmolLM2-135M has 30 layers of width 576)."""),
    ("code", """N = 60
groups = {
    'benign': datasets.load('rd-harmless-test', n=N, seed=0),
    'harmful': datasets.load('rd-harmful-test', n=N, seed=0),
    'xstest-safe': datasets.load('xstest-safe', n=N, seed=0),
    'orbench-hard': datasets.load('orbench-hard', n=N, seed=0),
}
for name, ps in groups.items():
    print(f'{name:13s} n={len(ps)}  e.g. {ps[0].prompt[:80]!r}')
t = time.perf_counter()
acts = {name: mosr.capture(lm, ps, layers='all', position='last', batch_size=32, progress=False)
        for name, ps in groups.items()}
layers = list(range(lm.n_layers))
print({name: tuple(a.shape) for name, a in acts.items()}, f'captured in {time.perf_counter() - t:.0f} s')"""),
    ("md", """## 2. One probe per layer

`evaluate_probes` holds out a stratified 30% of the benign + harmful prompts, fits a logistic
regression per layer on the rest (standardised features, L2 strength chosen by 3-fold CV) and reports
held-out accuracy (Wilson 95% CI) and AUROC (DeLong 95% CI). The **chosen layer** is the one with the
lowest cross-validated log-loss on the *training* split, so the test numbers stay unbiased."""),
    ("code", """from mosr.represent.probe import evaluate_probes

x = torch.cat([acts['benign'], acts['harmful']])
y = groups['benign'].labels + groups['harmful'].labels
ev = evaluate_probes(x, y, progress=False)
probes, best = ev.probes, ev.best_layer
print(f"{len(ev.train_index)} training prompts, {len(ev.test_index)} held out; chosen layer {best}")
shown = sorted(set(layers[::3]) | {best, layers[-1]})
rows = ['| layer | accuracy [95% CI] | AUROC [95% CI] |', '|---|---|---|']
for m in ev.metrics:
    if m.layer in shown:
        mark = f'**{m.layer}**' if m.layer == best else str(m.layer)
        rows.append(f'| {mark} | {m.accuracy:.2f} [{m.accuracy_ci[0]:.2f}, {m.accuracy_ci[1]:.2f}] '
                    f'| {m.auroc:.3f} [{m.auroc_ci[0]:.3f}, {m.auroc_ci[1]:.3f}] |')
display(Markdown('\\n'.join(rows)))"""),
    ("code", """plots.plot_probe_accuracy(layers, list(ev.metric('accuracy')), [m.accuracy_ci for m in ev.metrics],
                          list(ev.metric('auroc')), [m.auroc_ci for m in ev.metrics], best,
                          OUT / 'probe_accuracy', n_test=len(ev.test_index))
Image(OUT / 'probe_accuracy.png', width=520)"""),
    ("md", """## 3. How are over-refusal prompts classified?

The probes never saw an over-refusal prompt: they were fitted on benign vs harmful only. Scoring
XSTest-safe and OR-Bench-Hard with them asks where the model's representation puts these prompts.
The held-out benign and harmful test prompts are the reference lines (ideally 0% and 100%). A
pseudo-harmful group between them is what the boundary story predicts."""),
    ("code", """from mosr.stats import wilson

test = torch.as_tensor(ev.test_index)
is_harmful = torch.tensor([label == 'harmful' for label in y])
scored = {'benign (test)': x[test[~is_harmful[test]]], 'harmful (test)': x[test[is_harmful[test]]],
          'xstest-safe': acts['xstest-safe'], 'orbench-hard': acts['orbench-hard']}
frac, cis, ns = {}, {}, {}
for name, a in scored.items():
    k = probes.predict(a).sum(0)  # per layer: prompts with P(harmful) > 0.5
    frac[name] = (k / len(a)).tolist()
    cis[name] = [wilson(int(v), len(a)) for v in k]
    ns[name] = len(a)
plots.plot_fraction_malicious(layers, frac, OUT / 'fraction_malicious', cis=cis, best_layer=best, n=ns)
rows = ['| group (n) | ' + ' | '.join(f'layer {l}' for l in shown) + ' |', '|---|' + '---|' * len(shown)]
for name in scored:
    rows.append(f'| {name} ({ns[name]}) | ' + ' | '.join(f'{100 * frac[name][l]:.0f}%' for l in shown) + ' |')
display(Markdown('Share classified malicious:\\n\\n' + '\\n'.join(rows)))
Image(OUT / 'fraction_malicious.png', width=520)"""),
    ("md", """The distribution behind those shares at the chosen layer: each dot is one prompt's probe
probability P(harmful); the dashed line is the 0.5 threshold."""),
    ("code", """probs = {name: probes.proba(a, layer=best).tolist() for name, a in scored.items()}
plots.plot_probe_distributions(probs, best, OUT / 'probe_distributions')
Image(OUT / 'probe_distributions.png', width=520)"""),
    ("md", """Which over-refusal prompts does the probe read as most harmful, and which as most benign?
These are the candidates for over-refusal by a defence that keys on this direction."""),
    ("code", """for name in ('xstest-safe', 'orbench-hard'):
    p = probes.proba(acts[name], layer=best)
    order = p.argsort(descending=True).tolist()
    print(f'{name}, layer {best}: most harmful-looking')
    for i in order[:3]:
        print(f'  P={float(p[i]):.2f}  {groups[name][i].prompt[:110]!r}')
    print('  ... most benign-looking')
    for i in order[-2:]:
        print(f'  P={float(p[i]):.2f}  {groups[name][i].prompt[:110]!r}')"""),
    ("md", """## 4. Geometry: the PCA plane and the centroid axis

The PCA is fitted on benign + harmful prompts only, at the chosen layer; the over-refusal prompts are
projected into that plane. The centroid axis puts every prompt on the line from the benign centroid
(0) to the harmful centroid (1) at each layer; a group whose mean lies strictly between 0 and 1 sits
*between* the two reference groups."""),
    ("code", """from mosr.represent.geometry import centroid_geometry, pca_projection

pca, coords = pca_projection({name: a[:, best] for name, a in acts.items()})
plots.plot_pca_scatter({name: c.numpy() for name, c in coords.items()}, pca.explained.tolist(), best, OUT / 'pca')
Image(OUT / 'pca.png', width=460)"""),
    ("code", """geo = centroid_geometry(acts, layers=layers)
plots.plot_centroid_axis(layers, geo['axis_mean'], OUT / 'centroid_axis')
rows = ['| group | ' + ' | '.join(f'layer {l}' for l in shown) + ' |', '|---|' + '---|' * len(shown)]
for name, vals in geo['axis_mean'].items():
    rows.append(f'| {name} | ' + ' | '.join(f'{vals[l]:.2f}'.replace('-0.00', '0.00') for l in shown) + ' |')
display(Markdown('Mean position on the benign (0) → harmful (1) axis:\\n\\n' + '\\n'.join(rows)))
Image(OUT / 'centroid_axis.png', width=520)"""),
    ("md", """## Summary

The numbers below are computed from this run, so they stay correct when the notebook is re-executed
with another model, sample or seed."""),
    ("code", """m = ev.metrics[best]
between = [name for name in ('xstest-safe', 'orbench-hard') if 0 < geo['axis_mean'][name][best] < 1]
display(Markdown(
    f"- Benign and harmful prompts separate linearly: at the chosen layer {best} the held-out accuracy is "
    f"{m.accuracy:.2f} and the AUROC {m.auroc:.3f} ({len(ev.test_index)} test prompts).\\n"
    f"- At that layer the probe calls **{100 * frac['xstest-safe'][best]:.0f}%** of XSTest-safe and "
    f"**{100 * frac['orbench-hard'][best]:.0f}%** of OR-Bench-Hard malicious, against "
    f"{100 * frac['benign (test)'][best]:.0f}% of held-out benign and {100 * frac['harmful (test)'][best]:.0f}% "
    f"of held-out harmful prompts (n = {ns['xstest-safe']} / {ns['orbench-hard']} / {ns['benign (test)']} / "
    f"{ns['harmful (test)']}).\\n"
    f"- On the centroid axis at layer {best}: "
    + ', '.join(f"{name} {geo['axis_mean'][name][best]:.2f}".replace('-0.00', '0.00') for name in geo['axis_mean'])
    + (f"; between the benign and harmful centroids: {' and '.join(between)}." if between else
       "; neither over-refusal group lies strictly between the centroids at this layer.")))"""),
    ("code", timing_cell()),
]


# --- 02: LogitLens -------------------------------------------------------------------------------------

NB02: Cells = [
    ("md", """# 02 · LogitLens: what each layer is about to say

The LogitLens decodes every layer's residual stream at the last prompt token with the model's own
final norm and unembedding, `softmax(unembed(final_norm(h_l)))`; at the last layer this is exactly
the model's next-token distribution. Summing that distribution over tokens that open a refusal
("I", "Sorry", "As", ...) and over tokens that open an answer ("Sure", "Here", "To", ...) gives the
**refusal − compliance mass** per layer: positive means the layer leans towards refusing.

**Data** (seeded samples, seed 0), **n = 40 prompts per group**: benign `rd-harmless-test`, harmful
`rd-harmful-test`, over-refusal `xstest-safe` and `orbench-hard`, on the bundled
SmolLM2-135M-Instruct. SmolLM2-135M is barely safety-tuned (it answers over 90% of JailbreakBench's
harmful requests, see the README), so expect small refusal masses: the interest is in *where* the
groups differ. The command-line equivalent is `mosr lens --data SET --out DIR`. Built and executed by
`notebooks/build.py`."""),
    ("code", setup_cell("02_logit_lens")),
    ("md", """The two token groups come from the model's tokenizer (`lm.refusal_token_ids`,
`lm.compliance_token_ids`):"""),
    ("code", """from mosr.represent.lens import token_strings

print('refusal openers   :', token_strings(lm.tokenizer, lm.refusal_token_ids))
print('compliance openers:', token_strings(lm.tokenizer, lm.compliance_token_ids))"""),
    ("md", """## 1. Decode every layer

One forward pass per batch captures all 30 layers (`mosr.capture`), and `decode_layers` turns them into
the top-k tokens and the two masses per prompt and layer."""),
    ("code", """from mosr.capture import capture
from mosr.represent.lens import decode_layers

N = 40
groups = {
    'benign': datasets.load('rd-harmless-test', n=N, seed=0),
    'harmful': datasets.load('rd-harmful-test', n=N, seed=0),
    'xstest-safe': datasets.load('xstest-safe', n=N, seed=0),
    'orbench-hard': datasets.load('orbench-hard', n=N, seed=0),
}
prompts = [r.prompt for ps in groups.values() for r in ps]
rows_of, start = {}, 0
for name, ps in groups.items():
    rows_of[name] = list(range(start, start + len(ps)))
    start += len(ps)
t = time.perf_counter()
hidden = capture(lm, prompts, layers='all', position='last', batch_size=32, progress=False)
res = decode_layers(lm, hidden, k=5, prompts=prompts)
layers = res.layers
print(f'{len(prompts)} prompts x {len(layers)} layers decoded in {time.perf_counter() - t:.0f} s')"""),
    ("md", """## 2. Layer-wise decoding of one prompt per group

A table in the style of the MOSR paper's Fig. 5: rows are layers, columns prompts, each cell the top-3
tokens of that layer, coloured by refusal − compliance mass (red: refusal openers more likely). For
each group we show the prompt with the **highest refusal − compliance mass at the last layer**, i.e.
the one the model is closest to refusing."""),
    ("code", """examples = []
for name, rows in rows_of.items():
    i = max(rows, key=lambda r: float(res.score[r, -1]))
    examples.append({'title': name, 'prompt': prompts[i], 'tokens': res.top_tokens[i], 'score': res.score[i].tolist()})
    print(f'{name:13s} last-layer top-5 {res.top_tokens[i][-1]}  refusal-compliance {float(res.score[i, -1]):+.3f}'
          f'  {prompts[i][:70]!r}')
show = sorted(set(layers[::2]) | {layers[-1]})
plots.plot_lens_table(examples, layers, OUT / 'lens_table', show_layers=show, k=3)
Image(OUT / 'lens_table.png', width=900)"""),
    ("md", """## 3. Refusal − compliance mass per layer, per group

The heatmap shows the group means; the line plot adds a 95% t-interval over the prompts of each
group, and splits the score into its two masses. Early layers decode to near-uniform junk (both
masses ≈ 0); the interesting part is where the groups start to differ and in which order they end.

One caveat when reading the absolute values: " I" counts as a refusal opener ("I'm sorry", "I cannot"),
and on this model the middle layers decode " I" as the top token for nearly every prompt, whatever its
group (see the top-1 table in section 4). The bump around layers 12–18 is therefore shared by all
groups; compare the groups at a layer rather than reading a positive mass as a refusal."""),
    ("code", """names = list(groups)
mean_score = {name: res.mean_score(rows).tolist() for name, rows in rows_of.items()}
plots.plot_lens_heatmap(layers, mean_score, OUT / 'lens_heatmap', n={k: len(v) for k, v in rows_of.items()})
Image(OUT / 'lens_heatmap.png', width=420)"""),
    ("code", """import matplotlib.pyplot as plt
from mosr.stats import t_critical

colors = plots.group_colors(names)
with plt.rc_context(plots.STYLE):
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.9), sharex=True)
    for ax, (title, values) in zip(axes, (('refusal − compliance mass', res.score),
                                          ('refusal-opener mass', res.refusal_mass),
                                          ('compliance-opener mass', res.compliance_mass))):
        for name in names:
            v = values[rows_of[name]].double()
            mean, half = v.mean(0), t_critical(len(v) - 1) * v.std(0) / len(v) ** 0.5
            ax.plot(layers, mean, color=colors[name], lw=1.3, label=f'{name} (n={len(v)})')
            ax.fill_between(layers, mean - half, mean + half, color=colors[name], alpha=0.18, lw=0)
        ax.set(title=title, xlabel='layer')
        ax.grid(alpha=0.25, lw=0.5)
    axes[0].axhline(0, color='0.4', lw=0.8, ls='--')
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=len(names), frameon=False)
plots.save_figure(fig, OUT / 'lens_mass_per_layer')
Image(OUT / 'lens_mass_per_layer.png', width=900)"""),
    ("code", """shown = [0, 5, 10, 15, 20, 25, layers[-1]]
rows = ['| group (n) | ' + ' | '.join(f'layer {l}' for l in shown) + ' |', '|---|' + '---|' * len(shown)]
for name in names:
    rows.append(f'| {name} ({len(rows_of[name])}) | ' + ' | '.join(f'{mean_score[name][l]:+.3f}' for l in shown) + ' |')
display(Markdown('Mean refusal − compliance mass:\\n\\n' + '\\n'.join(rows)))"""),
    ("md", """## 4. Does the lens tell the groups apart?

AUROC of the per-prompt refusal − compliance mass, layer by layer: harmful vs benign (does the lens
carry the harmfulness signal?) and each over-refusal group vs benign (does it also fire on prompts
that only look harmful?). 0.5 is chance. The most frequent top-1 token per group at a few late layers
shows what the model is about to say."""),
    ("code", """from collections import Counter
from mosr.stats import auroc_ci

def auc_per_layer(pos, neg):
    s = torch.cat([res.score[rows_of[pos]], res.score[rows_of[neg]]]).numpy()
    lab = [True] * len(rows_of[pos]) + [False] * len(rows_of[neg])
    return [auroc_ci(s[:, j], lab) for j in range(len(layers))]

aucs = {f'{g} vs benign': auc_per_layer(g, 'benign') for g in ('harmful', 'xstest-safe', 'orbench-hard')}
rows = ['| comparison | ' + ' | '.join(f'layer {l}' for l in shown) + ' |', '|---|' + '---|' * len(shown)]
for name, vals in aucs.items():
    rows.append(f'| {name} | ' + ' | '.join(f'{vals[l][0]:.2f} [{vals[l][1]:.2f}, {vals[l][2]:.2f}]' for l in shown) + ' |')
display(Markdown('AUROC of refusal − compliance mass [95% DeLong CI]:\\n\\n' + '\\n'.join(rows)))
late = [15, 20, 25, layers[-1]]
rows = ['| group | ' + ' | '.join(f'layer {l}' for l in late) + ' |', '|---|' + '---|' * len(late)]
for name in names:
    cells = []
    for l in late:
        (tok, c), = Counter(res.top_tokens[i][l][0] for i in rows_of[name]).most_common(1)
        cells.append(f'`{tok!r}` ({c}/{len(rows_of[name])})')
    rows.append(f'| {name} | ' + ' | '.join(cells) + ' |')
display(Markdown('Most frequent top-1 token:\\n\\n' + '\\n'.join(rows)))"""),
    ("md", """## Summary (computed from this run)"""),
    ("code", """last = layers[-1]
gap = {name: max(layers, key=lambda l: mean_score[name][l] - mean_score['benign'][l]) for name in names[1:]}
h = aucs['harmful vs benign']
best_auc_layer = max(layers, key=lambda l: h[l][0])
display(Markdown(
    f"- At the last layer the mean refusal − compliance mass is "
    + ', '.join(f"{name} {mean_score[name][last]:+.3f}" for name in names) + ".\\n"
    f"- The lens separates harmful from benign prompts best at layer {best_auc_layer} (AUROC "
    f"{h[best_auc_layer][0]:.2f} [{h[best_auc_layer][1]:.2f}, {h[best_auc_layer][2]:.2f}]); at the last layer the "
    f"AUROC is {h[last][0]:.2f}.\\n"
    f"- Over-refusal prompts vs benign at the last layer: XSTest-safe AUROC {aucs['xstest-safe vs benign'][last][0]:.2f}, "
    f"OR-Bench-Hard {aucs['orbench-hard vs benign'][last][0]:.2f} (0.5 = the lens treats them like benign prompts).\\n"
    f"- Layer where a group's mean mass exceeds the benign mean the most: "
    + ', '.join(f"{name} {gap[name]} ({mean_score[name][gap[name]] - mean_score['benign'][gap[name]]:+.3f})"
                for name in gap) + "."))"""),
    ("code", timing_cell()),
]


# --- 03: overlap-aware weights + weighted training ------------------------------------------------------

NB03: Cells = [
    ("md", """# 03 · Overlap-aware weights and a short weighted training run

MOSR trains a LoRA defence with the circuit-breakers rerouting loss (erase harmful states, retain
benign ones) and two additions. This notebook shows the first, **overlap-aware loss weighting**:
each malicious training prompt gets a weight that is *smaller* the more it overlaps (in representation
space) a bank of benign prompts that look harmful, so the defence erases the boundary cases less and
over-refuses less. Then it trains MOSR (weights + context-aware augmentation) for a few steps and plots
the loss curves.

The run is `experiments/mosr.yaml` with `--set`-style overrides for a short run — the command-line
equivalent is

```bash
mosr train --config experiments/mosr.yaml --out runs/notebooks/03_weighted_training/train \\
  --set steps=6 --set checkpoint_every=6 --set data.n_harmful=64 --set data.n_retain=32 \\
  --set data.n_extra_retain=32 --set data.n_bank=128
```

**n**: 64 harmful training prompts (`rd-harmful-train` minus every prompt that occurs in an evaluation
set), a bank of 128 OR-Bench-80K pseudo-malicious prompts, 32 + 32 retain examples (Self-Instruct
answers + OR-80K bank answers), **6 optimizer steps** of batch 8. Six steps show the mechanics only:
in the recorded 40-step runs on this model the erasure left its starting point only after about 20
steps, and the defended model of the README's table comes from the full `experiments/mosr.yaml`
(40 steps, about 9 min on 2 CPU cores).
Built and executed by `notebooks/build.py`."""),
    ("code", setup_cell("03_weighted_training")),
    ("md", """## 1. The training config

`TrainConfig.load` reads the shipped config; `apply_overrides` is the parser behind `--set` (dotted keys
reach nested settings, values are YAML)."""),
    ("code", """import shutil
from mosr.config import apply_overrides
from mosr.train import TrainConfig, train

OVERRIDES = ['steps=6', 'checkpoint_every=6', 'data.n_harmful=64', 'data.n_retain=32', 'data.n_extra_retain=32',
             'data.n_bank=128', 'progress=false']
cfg = TrainConfig.from_dict(apply_overrides(TrainConfig.load('experiments/mosr.yaml').to_dict(), OVERRIDES))
RUN = OUT / 'train'
shutil.rmtree(RUN, ignore_errors=True)  # a fresh run folder (train() would resume or refuse a different one)
print(f'method {cfg.method}: {cfg.steps} steps x batch {cfg.batch_size}, lr {cfg.lr}, target layers {cfg.target_layers}, '
      f'mix {cfg.mix}')
print('weighting:', cfg.weighting.to_dict())"""),
    ("md", """## 2. Overlap-aware weights

For each malicious prompt `x_i`, `s_i` is the mean of its top-k (k = 8) cosine similarities to the bank,
computed on the post-instruction representation averaged over the target layers (10 and 20) and centred
on the mean of the benign ∪ malicious representations. The linear map
`w_i = clip(1 − λ(s_i − s_min)/(s_max − s_min), w_min, 1)` (λ = 0.7, w_min = 0.1), rescaled to mean 1,
turns overlap into weight: the erasure loss is `Σ w_i L_erase(i) / Σ w_i`.

We compute the weights on exactly the prompts the training run will use (same sets, sizes and seed)
and save them into its run folder, where `train()` finds them and uses them instead of computing them
again."""),
    ("code", """from dataclasses import replace
from mosr.train.sources import harmful_training_prompts
from mosr.train.weighting import compute_weights

d = cfg.data
harmful = harmful_training_prompts(d.harmful, n=d.n_harmful, seed=cfg.seed)
bank = datasets.load(d.bank, n=d.n_bank, seed=cfg.seed)
centre = datasets.load(d.retain, n=d.n_retain, seed=cfg.seed)  # the retain prompts: with the harmful ones, the centre μ
for name in d.extra_retain:
    centre = centre + datasets.load(name, n=d.n_extra_retain, seed=cfg.seed)
t = time.perf_counter()
w = compute_weights(lm, harmful, bank, centre, replace(cfg.weighting, layers=cfg.target_layers), progress=False)
w.save(RUN / 'weights')
print(f'{len(harmful)} malicious, {len(bank)} bank, {len(centre)} centre prompts; {time.perf_counter() - t:.0f} s')
print({k: round(v, 3) for k, v in w.summary().items()})"""),
    ("md", """The most and the least overlapping malicious prompts, each with its nearest bank prompt. The most
overlapping ones are erased least."""),
    ("code", """bank_text = dict(zip(bank.ids, bank.prompts))
ranked = w.ranked()

def short(text, n=90):
    text = ' '.join(text.split()).replace('|', '/')
    return text if len(text) <= n else text[:n - 1] + '…'

rows = ['| | s_i | w_i | malicious prompt | nearest bank prompt |', '|---|---|---|---|---|']
for tag, part in (('most', ranked[:5]), ('least', ranked[-5:])):
    for r in part:
        rows.append(f"| {tag} | {r['similarity']:.3f} | {r['weight']:.2f} | {short(r['prompt'])} "
                    f"| {short(bank_text[r['neighbours'][0]])} |")
display(Markdown('\\n'.join(rows)))"""),
    ("code", """plots.plot_weights(w, OUT / 'weights', bins=20)
Image(OUT / 'weights.png', width=820)"""),
    ("md", """## 3. A short MOSR run with the weighted loss

Each step draws a micro-batch of 8 examples by the configured mix (erase 2 : retain 5 : refusal 1):
harmful prompts with their harmful completions (weighted erase term: ReLU of the centred cosine between
the adapted and frozen states at layers 10 and 20, plus `erase_collapse` × the collapse push when the
config sets it), retain examples (relative L2 to the frozen states) and augmented refusals (harmful
prefix + refusal, NLL). The coefficients follow circuit breakers'
schedule, `c_r = ρ·α·s/(2S)` rising and `c_e = α(1 − s/(2S))` falling, and the augmentation weight
ramps in as `β·s/S`. The frozen reference states are computed once, before the first step. The
harmful completions come from the shared cache `runs/cache/` (generated by the model itself when
missing)."""),
    ("code", """weights_saved = (RUN / 'weights' / 'weights.json').read_text()
t = time.perf_counter()
result = train(cfg, RUN, lm=lm)  # attaches LoRA to `lm` in place
print(f'trained in {time.perf_counter() - t:.0f} s; adapter: {result.adapter}')
assert (RUN / 'weights' / 'weights.json').read_text() == weights_saved, 'training recomputed the weights'
print('training used the weights computed above')
print({k: v for k, v in result.last.items()})"""),
    ("md", """## 4. Loss curves

`log.jsonl` has one row per optimizer step: the total loss, its terms (weighted erase cosine, retain
distance, augmentation NLL), the coefficients, learning rate, gradient norm and seconds."""),
    ("code", """import json
import matplotlib.pyplot as plt

log = [json.loads(line) for line in (RUN / 'log.jsonl').read_text().splitlines() if line.strip()]
steps = [r['step'] for r in log]
with plt.rc_context(plots.STYLE):
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.8))
    axes[0].plot(steps, [r['loss'] for r in log], marker='o', ms=3, color='k')
    axes[0].set(title='total loss', xlabel='step')
    for key, color in (('erase', '#d7301f'), ('retain', '#2b8cbe'), ('aug', '#fdae61')):
        if key in log[0]:
            axes[1].plot(steps, [r[key] for r in log], marker='o', ms=3, color=color, label=key)
    axes[1].set(title='loss terms', xlabel='step', yscale='log')
    axes[1].legend(frameon=False)
    for key, color in (('c_r', '#2b8cbe'), ('c_e', '#d7301f')):
        axes[2].plot(steps, [r[key] for r in log], marker='o', ms=3, color=color, label=key)
    axes[2].set(title='coefficients', xlabel='step')
    axes[2].legend(frameon=False)
    for ax in axes:
        ax.grid(alpha=0.25, lw=0.5)
    fig.tight_layout()
plots.save_figure(fig, OUT / 'loss_curves')
keys = [k for k in ('loss', 'erase', 'retain', 'aug', 'c_r', 'c_e', 'lr', 'grad_norm', 'seconds') if k in log[0]]
rows = ['| step | ' + ' | '.join(keys) + ' |', '|---|' + '---|' * len(keys)]
rows += [f"| {r['step']} | " + ' | '.join(f'{r[k]:.4g}' for k in keys) + ' |' for r in log]
display(Markdown('\\n'.join(rows)))
Image(OUT / 'loss_curves.png', width=900)"""),
    ("md", """## Summary (computed from this run)

The erase term starts at its value for unchanged states, `h' = h`: 1 for the cosine, plus
`erase_collapse` × 1 for the collapse push (the config printed in section 1 holds its value). An erase
term that stays there means the adapted harmful states still point where the frozen ones do: the
defence has not started erasing yet, while the augmentation NLL (learning the refusals) already falls. Notebook 04 evaluates this adapter against the base model
(expect little difference after 6 steps); the README's table has the full 40-step runs."""),
    ("code", """first, last = log[0], log[-1]
display(Markdown(
    f"- {len(log)} steps, median {sorted(r['seconds'] for r in log)[len(log) // 2]:.1f} s per step.\\n"
    f"- Erase term {first['erase']:.4f} → {last['erase']:.4f}, retain {first['retain']:.4f} → {last['retain']:.4f}"
    + (f", augmentation NLL {first['aug']:.3f} → {last['aug']:.3f}" if 'aug' in last else '') + ".\\n"
    f"- Weights of the {len(w)} malicious prompts: {w.summary()['weight_min']:.2f}–{w.summary()['weight_max']:.2f} "
    f"(mean 1), from overlaps {w.summary()['similarity_min']:.2f}–{w.summary()['similarity_max']:.2f}.\\n"
    f"- Adapter: `{result.adapter}` (load with `mosr.load('smollm2-135m-instruct', adapter=...)`)."))"""),
    ("code", timing_cell()),
]


# --- 04: evaluation -------------------------------------------------------------------------------------

NB04: Cells = [
    ("md", """# 04 · Evaluating a defence: base model vs adapter

`mosr.evaluation.run.evaluate` generates greedy responses, judges each one (string match on the refusal
phrases of XSTest, refusal_direction and JailbreakBench, plus a detector for degenerate output) and
reports per set the **refusal rate (RR)** on benign / pseudo-harmful prompts and the **attack success
rate (ASR)** on harmful ones, with 95% Wilson intervals. `compare` tabulates several runs and
`plots.plot_tradeoff` draws the safety / over-refusal trade-off (lower-left is better).

**Data**: seeded samples of **n = 20 prompts per set** (seed 0) of XSTest-safe and OR-Bench-Hard
(over-refusal: RR) and JailbreakBench-harmful and AdvBench (harmful: ASR), **32 new tokens** per
response, on the bundled SmolLM2-135M-Instruct. With n = 20 a rate's 95% interval is about ±20 points,
so only large differences mean anything here; the README's evaluations use 60 prompts per set and 64
tokens.

**The adapter** is, in this order: `$MOSR_NOTEBOOK_ADAPTER` when set (e.g. `runs/mosr/adapter` of
`mosr train --config experiments/mosr.yaml --out runs/mosr`); the 40-step MOSR adapter of `make demo`
(`runs/demo/study/train/mosr-s0/adapter`, a defended model) when the demo has run; the 6-step MOSR
run of notebook 03; or, when none exists, an equally short run trained here. Six steps do not make a
defended model (see 03): with that adapter expect the two rows to be close. The cell below prints
which adapter it took.
Built and executed by `notebooks/build.py`."""),
    ("code", setup_cell("04_evaluation")),
    ("md", """## 1. The adapter"""),
    ("code", """import shutil
ROOT = OUT.parent
candidates = [os.environ.get('MOSR_NOTEBOOK_ADAPTER'), 'runs/demo/study/train/mosr-s0/adapter',
              ROOT / '03_weighted_training' / 'train' / 'adapter']
ADAPTER = next((Path(c) for c in candidates if c and (Path(c) / 'adapter_config.json').is_file()), None)
if ADAPTER is not None:
    print('reusing', ADAPTER)
else:  # notebook 03 has not run here: train an equally short MOSR adapter
    from mosr.config import apply_overrides
    from mosr.train import TrainConfig, train
    overrides = ['steps=6', 'checkpoint_every=6', 'data.n_harmful=64', 'data.n_retain=32', 'data.n_extra_retain=32',
                 'data.n_bank=128', 'progress=false']
    cfg = TrainConfig.from_dict(apply_overrides(TrainConfig.load('experiments/mosr.yaml').to_dict(), overrides))
    shutil.rmtree(OUT / 'train', ignore_errors=True)
    t = time.perf_counter()
    ADAPTER = train(cfg, OUT / 'train').adapter
    print(f'trained {ADAPTER} in {time.perf_counter() - t:.0f} s')"""),
    ("md", """## 2. Evaluate both

Each call writes a run folder (`config.yaml`, `responses.jsonl`, `metrics.json`, `table.md`) and
resumes from it when re-run with the same settings; we start from empty folders so the timings are
real."""),
    ("code", """from mosr.evaluation.config import EvalConfig
from mosr.evaluation.run import compare, evaluate

SETS = ['xstest-safe', 'orbench-hard', 'jbb-harmful', 'advbench']
settings = dict(sets=SETS, n=20, max_new_tokens=32, seed=0)
results = {}
for name, adapter in (('base', None), ('adapter', str(ADAPTER))):
    folder = OUT / f'eval-{name}'
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    results[name] = evaluate('smollm2-135m-instruct', EvalConfig(adapter=adapter, **settings), out=folder,
                             progress=False)
    print(f'{name:8s} {len(results[name].rows)} prompts in {time.perf_counter() - t:.0f} s -> {folder}')"""),
    ("md", """## 3. The table

RR = (refusal + degenerate) / n on the benign and pseudo-harmful sets, ASR = compliance / n on the
harmful ones (both %, lower is better). The aggregate is the mean RR over the paper's benign /
pseudo-harmful columns plus the mean ASR over its harmful columns."""),
    ("code", """runs = compare([OUT / 'eval-base', OUT / 'eval-adapter'], OUT / 'table')
display(Markdown((OUT / 'table.md').read_text()))"""),
    ("md", """## 4. The trade-off plot

One point per run: x = mean RR over the over-refusal sets, y = mean ASR over the harmful sets, with
95% intervals. A defence that works moves down (safer) without moving right (more over-refusal)."""),
    ("code", """plots.plot_tradeoff(runs, OUT / 'tradeoff')
Image(OUT / 'tradeoff.png', width=460)"""),
    ("md", """## 5. Where the two models differ

Prompts whose verdict changed between the base model and the adapter, with both responses (the first
80 characters)."""),
    ("code", """base = {(r['set'], r['id']): r for r in results['base'].rows}
changed = [(base[(r['set'], r['id'])], r) for r in results['adapter'].rows
           if r['verdict'] != base[(r['set'], r['id'])]['verdict']]
print(f'{len(changed)} of {len(base)} prompts changed verdict')

def short(text, n=80):
    text = ' '.join((text or '').split()).replace('|', '/')
    return text if len(text) <= n else text[:n - 1] + '…'

if changed:
    rows = ['| set | prompt | base | adapter |', '|---|---|---|---|']
    for b, a in changed[:8]:
        rows.append(f"| {a['set']} | {short(a['prompt'], 60)} | {b['verdict']}: {short(b['response'])} "
                    f"| {a['verdict']}: {short(a['response'])} |")
    display(Markdown('\\n'.join(rows)))
else:
    r = results['adapter'].rows[0]
    print(f"e.g. {r['set']}: {short(r['prompt'], 60)!r} -> {r['verdict']}: {short(r['response'])!r}")"""),
    ("md", """## Summary (computed from this run)"""),
    ("code", """from mosr.evaluation.metrics import tradeoff_point

lines = []
for run in runs:
    rr, asr = tradeoff_point(run.metrics)
    lines.append(f"- **{run.name}**: mean RR {rr.fmt()} over {', '.join(rr.parts)}; mean ASR {asr.fmt()} over "
                 f"{', '.join(asr.parts)} (%, 95% CI; n = 20 per set).")
lines.append(f"- {len(changed)} of {len(base)} prompts changed verdict between the base model and `{ADAPTER}`.")
display(Markdown('\\n'.join(lines)))"""),
    ("code", timing_cell()),
]


# --- 05: steering and ablation --------------------------------------------------------------------------

NB05: Cells = [
    ("md", """# 05 · Steering and ablation: the intervention API

`mosr.steer`, `mosr.ablate` and `mosr.orthogonalize` edit the residual stream of a loaded model inside a
`with` block ([docs/interventions.md](../docs/interventions.md)). This notebook finds the refusal
direction of the bundled **SmolLM2-135M-Instruct**, runs Arditi et al.'s two checks on a few prompts, and
checks three properties of the API:
- ablated states have no component along r̂;
- the weight version gives the same logits as the hook version;
- leaving a block restores the model.

**Data**: the direction comes from 32 + 32 training prompts (`rd-harmful-train`, `rd-harmless-train`),
scored on 8 held-out prompts per set. The checks use 8 `jbb-harmful` and 8 `rd-harmless-test` prompts
(seed 0), greedy, 32 new tokens. Eight prompts show the mechanics, not rates.

SmolLM2 has no safety alignment: it answers most harmful prompts, so there is little refusal here to
remove or to induce. The aligned model's checks, on 100 prompts with CIs, are in
[docs/results.md](../docs/results.md#qwen-refusal-direction). Built and executed by `notebooks/build.py`."""),
    ("code", setup_cell("05_steering")),
    ("md", """## 1. Prompts"""),
    ("code", """harmful = mosr.load_prompts('jbb-harmful', n=8, seed=0)
harmless = mosr.load_prompts('rd-harmless-test', n=8, seed=0)
for name, ps in (('jbb-harmful', harmful), ('rd-harmless-test', harmless)):
    print(f'{name:16s} n={len(ps)}  e.g. {ps[0].prompt[:70]!r}')"""),
    ("md", """## 2. The refusal direction

`find_direction` takes the difference in means of harmful and harmless prompts at the last prompt token,
one candidate per layer. It scores each candidate by refusal log-odds: on harmful prompts with the
candidate ablated (the ablation score, lower is better) and on harmless prompts with it added (the
addition score). It also measures the KL the ablation causes on harmless prompts. The last 20% of layers
are not scored. Among the candidates with KL ≤ 0.2 the lowest ablation score wins. These are the aligned
model's thresholds; there is no addition filter.

The command-line equivalent:

```bash
mosr direction --kind refusal --model smollm2-135m-instruct --out runs/notebooks/05_steering/refusal-dir \\
  --set kl_threshold=0.2 --set induce_refusal_threshold=null
```"""),
    ("code", """import shutil
from mosr.interventions import DirectionConfig, find_direction

DIR = OUT / 'refusal-dir'
shutil.rmtree(DIR, ignore_errors=True)
cfg = DirectionConfig(kind='refusal', model='smollm2-135m-instruct', n_train=32, n_select=8,
                      kl_threshold=0.2, induce_refusal_threshold=None)
t = time.perf_counter()
d = find_direction(cfg, out=DIR, lm=lm, progress=False)
s, base, cost = d.info['scores'], d.info['baseline'], d.info['cost']
print(f"chosen: layer {d.layer}, position {d.position}, |v| = {d.vector.norm():.2f}; "
      f"{cost['candidates_scored']} candidates scored in {time.perf_counter() - t:.0f} s")
print(f"ablation score (held-out harmful):  {base['ablation_score']:+.2f} -> {s['ablation_score']:+.2f}")
print(f"addition score (held-out harmless): {base['addition_score']:+.2f} -> {s['addition_score']:+.2f}")
print(f"KL on harmless under ablation: {s['kl']:.3f}")
print('folder:', sorted(p.name for p in DIR.iterdir()))
assert torch.equal(mosr.load_direction(DIR).vector, d.vector)  # what `mosr eval --ablate DIR` reads
Image(DIR / 'scores.png', width=720)"""),
    ("md", """## 3. Check 1: ablate the direction on harmful prompts

Inside `with mosr.ablate(lm, d.vector):` the component along r̂ is removed at every block's input and
from every attention and MLP output. *Refusal log-odds* is log p(R) − log(1 − p(R)), where p(R) is the
probability that the first response token opens a refusal. The verdict comes from the string judge of
`mosr eval`."""),
    ("code", """from mosr.evaluation.judge import judge
from mosr.generate import generate_full

def run(prompts, max_new_tokens=32):
    g = generate_full(lm, prompts, max_new_tokens=max_new_tokens, progress=False, score=True)
    return g.responses, torch.tensor(g.refusal_scores)

def short(text, n=70):
    text = ' '.join((text or '').split()).replace('|', '/')
    return text if len(text) <= n else text[:n - 1] + '…'

def report(name, responses, scores):
    refused = sum(judge(r) == 'refusal' for r in responses)
    print(f'{name:28s} mean refusal log-odds {scores.mean():+.2f}, refused {refused}/{len(responses)}')
    return refused

def side_by_side(prompts, a, b, names):
    rows = [f'| prompt | {names[0]} | {names[1]} |', '|---|---|---|']
    rows += [f'| {short(p, 45)} | {judge(x)}: {short(x)} | {judge(y)}: {short(y)} |'
             for p, x, y in zip(prompts.prompts, a, b)]
    display(Markdown('\\n'.join(rows)))

plain_h, plain_h_lo = run(harmful)
with mosr.ablate(lm, d.vector):
    abl_h, abl_h_lo = run(harmful)
refused_plain = report('harmful, plain', plain_h, plain_h_lo)
refused_abl = report('harmful, ablated', abl_h, abl_h_lo)
side_by_side(harmful, plain_h, abl_h, ('plain', 'ablated'))"""),
    ("md", """SmolLM2 already answers these prompts, so the ablation has nothing to flip: the refusal log-odds barely
move and the responses change in wording only. On the aligned Qwen2.5-Coder-0.5B the same check lowers
refusal of JBB-harmful prompts from 53% to 23% ([results](../docs/results.md#qwen-refusal-direction))."""),
    ("md", """## 4. Check 2: add the direction to harmless prompts

`mosr.steer(lm, d.vector, layers=[d.layer], alpha=α)` adds α·v to the stream after block `d.layer`, at
every position. First the refusal log-odds of the first response token for a few values of α (one forward
pass each), then the responses at α = 4."""),
    ("code", """ALPHAS = [0.0, 1.0, 2.0, 4.0, 8.0]
sweep = {}
for alpha in ALPHAS:
    with mosr.steer(lm, d.vector, layers=[d.layer], alpha=alpha):
        sweep[alpha] = run(harmless, max_new_tokens=1)[1].mean().item()
print('harmless, mean refusal log-odds by alpha:', ', '.join(f'{a:g}: {v:+.2f}' for a, v in sweep.items()))

ALPHA = 4.0
plain_b, plain_b_lo = run(harmless)
with mosr.steer(lm, d.vector, layers=[d.layer], alpha=ALPHA):
    steer_b, steer_b_lo = run(harmless)
refused_b_plain = report('harmless, plain', plain_b, plain_b_lo)
refused_b_steer = report(f'harmless, steered (alpha={ALPHA:g})', steer_b, steer_b_lo)
side_by_side(harmless, plain_b, steer_b, ('plain', f'steered, α = {ALPHA:g}'))"""),
    ("md", """On this model, adding the direction moves the first token towards the refusal openers: the log-odds
rise up to α = 4 and fall again at α = 8. The responses do not become refusals. At α = 4 most of them
start with "I", and several drift off topic. On the aligned model, adding its direction at α = 1 raises
refusal of harmless prompts from 15% to 43%."""),
    ("md", """## 5. Interventions compose with capture

`mosr.capture` inside `ablate` sees the ablated model. Every captured state, at every layer and token,
should have no component along r̂, up to float32 rounding. Some states here have norms in the
thousands, so the remainder relative to the state's norm is the number to read."""),
    ("code", """r_hat = d.vector / d.vector.norm()

def along_r(states):  # the largest |x·r̂| and |x·r̂| / |x| over prompts, layers and tokens
    dots = [(s.float() @ r_hat).abs() for s in states]
    rel = [(s.float() @ r_hat).abs() / s.float().norm(dim=-1) for s in states]
    return max(float(x.max()) for x in dots), max(float(x.max()) for x in rel)

plain_states = mosr.capture(lm, harmful, layers='all', position='all', progress=False)  # per prompt: layer seq d
with mosr.ablate(lm, d.vector):
    ablated_states = mosr.capture(lm, harmful, layers='all', position='all', progress=False)
comp_plain, rel_plain = along_r(plain_states)
comp_abl, rel_abl = along_r(ablated_states)
n_states = sum(s.shape[0] * s.shape[1] for s in ablated_states)
print(f'{n_states} states ({len(harmful)} prompts x {lm.n_layers} layers x their tokens)')
print(f'plain:   max |x·r̂| = {comp_plain:.3g}  (max |x·r̂|/|x| = {rel_plain:.3g})')
print(f'ablated: max |x·r̂| = {comp_abl:.3g}  (max |x·r̂|/|x| = {rel_abl:.3g})')"""),
    ("md", """## 6. Weight orthogonalisation equals the hooks

`mosr.orthogonalize` bakes the same projection into the weights that write to the stream: the embedding,
the attention output and the MLP down projections. SmolLM2's tied unembedding is untied for the duration.
Its logits should equal those of `ablate` up to float32 rounding."""),
    ("code", """from mosr.batching import plan_batches

batch = plan_batches(lm, harmful, batch_size=len(harmful))[0]

def logits():
    with torch.inference_mode():
        return lm.model(**batch.model_inputs()).logits

def n_hooks():
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())

def tied():
    return lm.unembed.weight is lm.embed.weight

plain_logits = logits()
with mosr.ablate(lm, d.vector):
    hook_logits, hooks_inside = logits(), n_hooks()
with mosr.orthogonalize(lm, d.vector):
    weight_logits, hooks_orth, tied_orth = logits(), n_hooks(), tied()
diff_hw = float((hook_logits - weight_logits).abs().max())
diff_plain = float((hook_logits - plain_logits).abs().max())
print(f'logits {tuple(plain_logits.shape)}, max |logit| = {float(plain_logits.abs().max()):.1f}')
print(f'max |hooks - weights| = {diff_hw:.2g}   (for scale: max |ablated - plain| = {diff_plain:.3g})')
print(f'ablate: {hooks_inside} hooks; orthogonalize: {hooks_orth} hooks, unembedding tied: {tied_orth}')"""),
    ("md", """## 7. Leaving the context restores the model

All three nested, then a block left by an exception. Inside an `ablate` of the same direction,
`orthogonalize` has nothing left to remove: it edits only directions that no enclosing ablation already
removes. So no weight changes inside this nest; section 6 ran `orthogonalize` alone.

Afterwards the state dict, the hooks and the logits must be what they were. The logits are compared with
those computed before section 6, so the check also covers section 6's weight edit."""),
    ("code", """before = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
hooks_before, tied_before = n_hooks(), tied()
with mosr.steer(lm, d.vector, layers=[d.layer], alpha=ALPHA), mosr.ablate(lm, d.vector), \\
        mosr.orthogonalize(lm, d.vector):
    inside = lm.model.state_dict()
    changed = sum(not torch.equal(inside[k], v) for k, v in before.items() if k in inside)
    print(f'inside: {n_hooks()} hooks, {changed} of {len(before)} tensors changed')
try:
    with mosr.ablate(lm, d.vector):
        raise RuntimeError('leave the block by an exception')
except RuntimeError:
    pass
after = lm.model.state_dict()
same = after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
print(f'after: state dict bit-identical: {same}; hooks {hooks_before} -> {n_hooks()}; '
      f'unembedding tied {tied_before} -> {tied()}; logits identical: {torch.equal(logits(), plain_logits)}')"""),
    ("md", """## Summary (computed from this run)"""),
    ("code", """display(Markdown(
    f"- Refusal direction: layer {d.layer} of {lm.n_layers}, last prompt token; {cost['candidates_scored']} "
    f"candidates scored in {cost['scoring_s']:.0f} s ({cost['seconds_per_candidate']:.1f} s each).\\n"
    f"- Ablation, {len(harmful)} JBB-harmful prompts: refused {refused_plain} → {refused_abl}, mean refusal "
    f"log-odds {plain_h_lo.mean():+.2f} → {abl_h_lo.mean():+.2f}.\\n"
    f"- Addition (α = {ALPHA:g}), {len(harmless)} harmless prompts: refused {refused_b_plain} → {refused_b_steer}, "
    f"mean refusal log-odds {plain_b_lo.mean():+.2f} → {steer_b_lo.mean():+.2f}.\\n"
    f"- Under `ablate`, max |x·r̂| over every captured state: {comp_abl:.2g} (plain {comp_plain:.3g}).\\n"
    f"- `orthogonalize` vs `ablate`: max logit difference {diff_hw:.2g}.\\n"
    f"- After leaving the blocks: weights bit-identical {same}, {n_hooks()} hooks."))"""),
    ("code", timing_cell()),
]


NOTEBOOKS: dict[str, tuple[str, Cells]] = {
    "01": ("01_probing.ipynb", NB01),
    "02": ("02_logit_lens.ipynb", NB02),
    "03": ("03_weighted_training.ipynb", NB03),
    "04": ("04_evaluation.ipynb", NB04),
    "05": ("05_steering.ipynb", NB05),
}


def build(key: str):  # -> nbformat.NotebookNode
    """The unexecuted notebook ``key`` ("01" .. "05")."""
    import nbformat

    _, cells = NOTEBOOKS[key]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb, timeout: int = 600) -> float:  # nb: nbformat.NotebookNode
    """Run every cell of ``nb`` in place (repository root as working directory); returns the wall seconds.
    Raises ``nbclient.exceptions.CellExecutionError`` on the first cell that fails."""
    from nbclient import NotebookClient

    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return time.perf_counter() - t0


#: a Python warning as ``warnings`` prints it: ``<file>:<line>: <Category>Warning: <message>``
_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
#: a library's log line (transformers' deprecation notices): ``[transformers] ...``
_LOG_LINE = re.compile(r"^\[\w+\] ")
_SITE_PACKAGES = re.compile(r"[^\s'\"(]*/site-packages/")
_HOMES = re.compile(r"(?:/root|/home/[^/\s'\"]+)(?=[/\s'\",)]|$)")


def clean_text(text: str) -> str:
    """``text`` without machine paths: installed packages as ``<site-packages>/``, this checkout relative
    (its parent as ``..``), home folders as ``~``."""
    text = _SITE_PACKAGES.sub("<site-packages>/", text)
    text = text.replace(f"{ROOT}/", "").replace(str(ROOT), ".")
    if ROOT.parent != ROOT.parent.parent:  # not the file system root
        text = text.replace(f"{ROOT.parent}/", "../")
    return _HOMES.sub("~", text.replace(str(Path.home()), "~"))


def clean_outputs(nb) -> None:  # nb: nbformat.NotebookNode or a notebook dict
    """Strip what only says where and with which library versions a notebook was executed from its stored
    outputs, in place: Python warnings on stderr (the warning line and the source line under it) and
    library log lines (``[transformers] ...``), machine paths in every text output (:func:`clean_text`;
    images untouched), and progress-bar redraws (consecutive stream outputs joined, each line kept as
    its last ``\\r`` redraw shows it). An output left empty is dropped."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        kept: list = []
        for out in cell.get("outputs", []):
            if "text" in out:
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                if kept and kept[-1].get("output_type") == "stream" and kept[-1].get("name") == out.get("name"):
                    kept[-1]["text"] += text  # a progress bar writes one output per redraw
                    continue
                out["text"] = text
            kept.append(out)
        cell["outputs"] = []
        for out in kept:
            if "text" in out:
                out["text"] = clean_text(_clean_stream(out["text"], stderr=out.get("name") == "stderr"))
                if not out["text"]:
                    continue
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    out["data"][kind] = clean_text("".join(value) if isinstance(value, list) else value)
            cell["outputs"].append(out)


def _clean_stream(text: str, stderr: bool) -> str:
    """A stream's text with each line as its last carriage-return redraw left it, less (on stderr) Python
    warnings with their source line and ``[library]`` log lines."""
    lines, skip = [], False
    pieces = text.split("\n")  # not splitlines(): a bare \r is a redraw, not a line end
    for i, piece in enumerate(pieces):
        parts = [p for p in piece.split("\r") if p]
        line = (parts[-1] if parts else "") + ("\n" if i < len(pieces) - 1 else "")
        if stderr and (_WARNING.match(line) or _LOG_LINE.match(line)):
            skip = bool(_WARNING.match(line))  # a warning is followed by the indented source line
        elif not (skip and line[:1].isspace()):
            skip = False
            if line:
                lines.append(line)
    return "".join(lines)


def refresh_markdown(key: str) -> None:
    """Replace the markdown cells of the committed notebook ``key`` by the builder's, keeping its outputs.
    Only for prose edits: refuses when a code cell differs (then rebuild and re-execute)."""
    import nbformat

    filename, cells = NOTEBOOKS[key]
    path = HERE / filename
    nb = nbformat.read(path, as_version=4)
    kinds = [("md" if c.cell_type == "markdown" else c.cell_type) for c in nb.cells]
    if kinds != [k for k, _ in cells] or any(c.source != src for c, (k, src) in zip(nb.cells, cells) if k == "code"):
        raise SystemExit(f"notebooks/{filename}: code cells differ from build.py; re-execute it instead")
    for cell, (kind, src) in zip(nb.cells, cells):
        if kind == "md":
            cell.source = src
    nbformat.write(nb, path)
    print(f"refreshed the prose of notebooks/{filename}")


def main(argv: list[str] | None = None) -> int:
    import nbformat

    p = argparse.ArgumentParser(description="Build and execute the notebooks of notebooks/ (all by default).")
    p.add_argument("names", nargs="*", default=list(NOTEBOOKS), help=f"notebooks to rebuild: {' '.join(NOTEBOOKS)}")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--markdown-only", action="store_true",
                   help="only copy the prose (markdown cells) into the committed notebooks, keeping their outputs; "
                        "refuses when a code cell changed")
    args = p.parse_args(argv)
    keys = []
    for name in args.names:
        key = name[:2]
        if key not in NOTEBOOKS:
            p.error(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)}")
        keys.append(key)
    for key in keys:
        if args.markdown_only:
            refresh_markdown(key)
            continue
        filename, _ = NOTEBOOKS[key]
        nb = build(key)
        print(f"executing {filename} ...", flush=True)
        seconds = execute(nb, args.timeout)
        clean_outputs(nb)
        nb.metadata["mosr"] = {"built_by": "notebooks/build.py", "execution_seconds": round(seconds, 1)}
        nbformat.write(nb, HERE / filename)
        print(f"wrote notebooks/{filename} ({seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
