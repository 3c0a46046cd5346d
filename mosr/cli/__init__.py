"""``mosr <verb>``: a thin command line over the library.

Each verb lives in its own module of this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a function taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# OpenMP worker threads that spin while waiting make CPU runs several times slower whenever another
# process shares the cores (a 4-prompt forward: 10 s spinning vs 1.4 s passive on a 2-core machine).
# The command sleeps instead, unless the user chose a policy. OpenMP reads it when torch loads, so this
# runs before any verb module (and torch) is imported; ``import mosr`` itself sets nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mosr.errors import MosrError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosr", description="MOSR toolkit: probe, weight, train, evaluate, plot.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="<verb>")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mosr.io import note_start

    note_start()  # provenance names the code this command started with
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in run folders (provenance.json)
    try:
        return int(args.func(args) or 0)
    except MosrError as e:
        print(f"mosr {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"mosr {args.verb}: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
