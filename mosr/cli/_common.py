"""Argument helpers shared by the verbs, and the one override syntax of every verb that takes a config.

A verb with a config file builds it with :func:`build_config`: the file (or the config's defaults),
then each ``--set key=value`` (:func:`apply_overrides`; dotted keys reach nested configs, values are
parsed as YAML), then the flags given on the command line; the result goes through
``Config.from_dict``, which coerces every value to its field's type and validates it, so a bad value
is a one-line :class:`~mosr.errors.ConfigError` whichever way it was given.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mosr.config import Config, apply_overrides
from mosr.errors import LayerError
from mosr.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from mosr.capture import Position

C = TypeVar("C", bound=Config)
DEFAULT_DTYPE = "float32"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help=f"model alias, hub id (org/name), directory or .gguf (default: the config's, else {DEFAULT_MODEL})",
    )
    p.add_argument("--adapter", default=None, help="LoRA adapter directory to apply")
    p.add_argument(
        "--dtype", default=None, help=f"float32 | bfloat16 | float16 (default: the config's, else {DEFAULT_DTYPE})"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | ... (default: cuda if available)")


def add_set_arg(p: argparse.ArgumentParser, example: str = "--set seed=1 --set judge.kind=llm") -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field (dotted keys for nested ones, YAML values), e.g. {example}; "
        "repeatable; flags given on the command line win over --set",
    )


def build_config(cls: type[C], path: str | None, overrides: list[str], flags: Mapping[str, Any] | None = None) -> C:
    """``cls`` from the file at ``path`` (or its defaults), then ``--set`` ``overrides``, then the
    command-line ``flags`` that were given (None = not given; dotted keys reach nested configs)."""
    data = cls.load(path).to_dict() if path else cls().to_dict()
    data = apply_overrides(data, list(overrides))
    for key, value in (flags or {}).items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return cls.from_dict(data)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", default=None, help="benchmark data directory (default: $MOSR_DATA_DIR or ../shared/data)"
    )


def parse_layers(text: str) -> Literal["all"] | list[int]:
    """'all' | '5' | '0,10,20' | '10-20'; anything else is a one-line :class:`LayerError` (checked before
    a model loads; the range is checked against the model)."""
    if text == "all":
        return "all"
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.rsplit("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise LayerError(
            f"--layers: cannot read {text!r}; use 'all', one layer ('5'), a list ('0,10,20') or a range ('10-20')"
        ) from None
    return out


def parse_position(text: str) -> Position:
    try:
        return int(text)
    except ValueError:
        return text  # type: ignore[return-value]  # a keyword, checked by mosr.capture.check_position


def load_model(args: argparse.Namespace):  # noqa: ANN201 - returns mosr.LM
    """The model of a verb without a config file (``--model`` / ``--dtype`` defaults applied here)."""
    from mosr.models import check_device, load

    check_device(args.device)  # before the (slow) load
    return load(
        args.model or DEFAULT_MODEL, dtype=args.dtype or DEFAULT_DTYPE, device=args.device, adapter=args.adapter
    )
