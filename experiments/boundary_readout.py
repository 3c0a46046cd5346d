"""Which read-out of the safety representation predicts over-refusal: per layer, the AUROC (DeLong 95% CI) of
several scores for telling the pseudo-harmful prompts a model refuses from those it answers.

Reads a representation-study run folder (``mosr probe --out DIR``: ``acts/``, ``prompts.jsonl`` with the
refusal verdicts, ``probes/``) and compares, at every captured layer, scores that never saw a refusal label:

* ``probe_p``: the study's logistic probe (harmful vs harmless), P(harmful) (what the study reports);
* ``probe_logit``: the same probe's decision value (no saturation at 0 / 1, so no ties);
* ``mean_diff``: projection on the difference of the harmful and harmless means of the probes' training
  split (the refusal-direction read-out of Arditi et al.), centred on their midpoint;
* ``lens``: the LogitLens refusal − compliance opener mass (from the study's results).

    python experiments/boundary_readout.py --run runs/probe-qwen-coder \
        --out experiments/results/qwen-coder/boundary-readout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.represent.probe import ProbeSet
from mosr.stats import auroc_ci
from mosr.store import ActivationStore


def scores(run: Path) -> tuple[list[int], dict[str, np.ndarray], np.ndarray, list[dict]]:
    """Per-layer scores of the pseudo-harmful prompts (``name -> prompt x layer``), the layers, refused flags."""
    rows = list(read_rows(run / "prompts.jsonl"))
    store = ActivationStore(run / "acts")
    pos = {pid: i for i, pid in enumerate(store.ids)}
    acts = store.load().float()  # prompt layer d_model, store order
    layers = list(json.loads((run / "results.json").read_text())["lens"]["layers"])
    probes = ProbeSet.load(run / "probes")
    train = [pos[r["id"]] for r in rows if r["split"] == "train"]
    harm = torch.tensor([r["group"] == "harmful" for r in rows if r["split"] == "train"])
    pseudo = [r for r in rows if r["group"] == "pseudo_harmful" and "refused" in r]
    idx = [pos[r["id"]] for r in pseudo]
    x_tr, x = acts[train], acts[idx]  # prompt layer d_model
    mu_h, mu_b = x_tr[harm].mean(0), x_tr[~harm].mean(0)  # layer d_model
    d = mu_h - mu_b
    out = {"mean_diff": torch.einsum("pld,ld->pl", x - (mu_h + mu_b) / 2, d / d.norm(dim=-1, keepdim=True)).numpy()}
    logit = probes.logits(x)  # prompt layer
    out.update(probe_logit=logit.numpy(), probe_p=torch.sigmoid(logit).numpy())
    return layers, out, np.array([r["refused"] for r in pseudo], dtype=bool), pseudo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a mosr probe run folder")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    layers, per, refused, pseudo = scores(run)
    res = json.loads((run / "results.json").read_text())
    lens_auc = res["risk"]["refused_vs_answered"]["lens"]["auroc_per_layer"]
    table = {name: [list(auroc_ci(v[:, j], refused)) for j in range(len(layers))] for name, v in per.items()}
    write_json(
        out / "readout.json",
        {
            "run": str(run),
            "layers": layers,
            "n_refused": int(refused.sum()),
            "n_answered": int((~refused).sum()),
            "auroc": table,
            "lens_auroc": lens_auc,
            **script_provenance(),
        },
    )
    names = list(per)
    lines = [
        f"Refused {int(refused.sum())} vs answered {int((~refused).sum())} pseudo-harmful prompts "
        f"({run.name}); AUROC [95% DeLong CI] per layer",
        "",
        "| layer | " + " | ".join(names) + " | lens |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for j, layer in enumerate(layers):
        cells = [f"{table[n][j][0]:.3f} [{table[n][j][1]:.3f}, {table[n][j][2]:.3f}]" for n in names]
        lines.append(f"| {layer} | " + " | ".join(cells) + f" | {lens_auc[j]:.3f} |")
    write_text(out / "readout.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
