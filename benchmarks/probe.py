"""Benchmark: fitting the per-layer probes (all layers, ~1,000 prompts).

    # on real captured states (any ActivationStore with benign + harmful labels, e.g. the study's):
    python benchmarks/probe.py --store runs/probe-smollm2/acts
    # on synthetic states shaped like SmolLM2-135M (1,000 prompts x 30 layers x 576):
    python benchmarks/probe.py

Reports wall time of ``ProbeSet.fit`` (CV over C on every layer) and of ``evaluate_probes``
(70/30 split + fit + test metrics), serial and with one worker per CPU core.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from mosr.represent.probe import ProbeConfig, ProbeSet, evaluate_probes


def synthetic(n: int, layers: int, d: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Gaussian states whose class signal (a random direction) grows with depth."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    direction = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    acts = torch.randn(n, layers, d, generator=g)
    strength = torch.linspace(0.2, 3.0, layers)
    acts += (y[:, None, None] * strength[None, :, None]) * direction
    return acts, ["harmful" if v else "benign" for v in y.tolist()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="ActivationStore folder with benign + harmful prompts")
    ap.add_argument("--n", type=int, default=1000, help="prompts (synthetic data only)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.store:
        from mosr.store import ActivationStore

        store = ActivationStore(args.store)
        rows = [i for i, lab in enumerate(store.labels) if lab in ("benign", "harmful")]
        acts = store.load().float()[rows]
        labels = [store.labels[i] for i in rows]
        source = f"{args.store} (real states)"
    else:
        acts, labels = synthetic(args.n, 30, 576)
        source = "synthetic"
    n, n_layers, d = acts.shape
    print(
        f"data: {source}; {n} prompts ({labels.count('harmful')} harmful) x {n_layers} layers x {d}; "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    for n_jobs in (1, os.cpu_count() or 1):
        config = ProbeConfig(n_jobs=n_jobs)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            ProbeSet.fit(acts, labels, config=config, progress=False)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        ev = evaluate_probes(acts, labels, config=config, progress=False)
        t_eval = time.perf_counter() - t
        best = ev.metrics[ev.probes.slot(ev.best_layer)]
        print(
            f"n_jobs={n_jobs}: ProbeSet.fit (Cs={list(config.Cs)}, {config.cv}-fold CV, all {n_layers} layers) "
            f"best of {args.repeat}: {min(times):.2f} s ({min(times) / n_layers * 1000:.0f} ms/layer); "
            f"evaluate_probes: {t_eval:.2f} s; best layer {ev.best_layer}: test acc {best.accuracy:.3f}, "
            f"AUROC {best.auroc:.3f}"
        )


if __name__ == "__main__":
    main()
