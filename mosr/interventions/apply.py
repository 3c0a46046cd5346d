"""An intervention named in a run's config: what ``mosr eval --ablate DIR`` / ``--steer DIR --alpha A`` apply.

:class:`InterventionConfig` is a field of :class:`mosr.evaluation.run.EvalConfig` (``intervention``),
so it is saved in the run's ``config.yaml``; it is run-defining, so a resumed run keeps it and a
changed one (another kind, folder, α, layers, or a folder whose direction changed: ``sha`` is the
digest of its ``direction.safetensors``) is refused.

* ``kind: ablate``: :func:`~mosr.interventions.ablate` of the folder's direction at ``layers``
  (None = every block, refusal_direction's directional ablation).
* ``kind: steer``: :func:`~mosr.interventions.steer` of the folder's vector (the raw difference in
  means) times ``alpha`` at ``layers`` (None = the direction's own layer, as ActAdd), at ``positions``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mosr.config import Config
from mosr.errors import ConfigError
from mosr.interventions.ablate import ablate
from mosr.interventions.directions import DIRECTION_TENSORS, load_direction
from mosr.interventions.steer import STEER_POSITIONS, steer
from mosr.models import LM

INTERVENTION_KINDS = ("ablate", "steer")


@dataclass
class InterventionConfig(Config):
    """An intervention applied to the model for a whole run; ``kind: null`` = none."""

    kind: str | None = None  # null | ablate | steer
    direction: str | None = None  # a folder written by `mosr direction`
    alpha: float = 1.0  # steer only
    layers: list[int] | None = None  # ablate: null = every block; steer: null = the direction's layer
    positions: str = "all"  # steer only: all | last
    sha: str | None = None  # digest of the folder's direction (filled in by resolve_intervention)

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in INTERVENTION_KINDS:
            raise ConfigError(f"intervention.kind must be one of {INTERVENTION_KINDS} or null, got {self.kind!r}")
        if self.kind is not None and not self.direction:
            raise ConfigError(
                f"intervention.kind={self.kind!r} needs intervention.direction (a `mosr direction` folder)"
            )
        if self.kind is None and self.direction:
            raise ConfigError("intervention.direction is set but intervention.kind is null: use ablate or steer")
        if self.positions not in STEER_POSITIONS:
            raise ConfigError(f"intervention.positions must be one of {STEER_POSITIONS}, got {self.positions!r}")
        if self.kind != "steer" and (self.alpha != 1.0 or self.positions != "all"):
            raise ConfigError("intervention.alpha and intervention.positions apply to kind steer only")


def resolve_intervention(cfg: InterventionConfig, mode: str = "generate") -> None:
    """Check the direction folder (a one-line error if it is missing or broken) and record its digest in
    ``cfg.sha``; does nothing without an intervention. Runs before any model loads. ``mode``: the eval mode
    (``repr`` compares an adapter with its base model and takes no intervention)."""
    if cfg.kind is None or cfg.direction is None:
        return
    if mode == "repr":
        raise ConfigError("mode repr compares an adapter with its base model; it takes no --ablate / --steer")
    load_direction(cfg.direction)
    cfg.sha = hashlib.sha256((Path(cfg.direction) / DIRECTION_TENSORS).read_bytes()).hexdigest()[:16]


@contextmanager
def intervene(lm: LM, cfg: InterventionConfig) -> Iterator[LM]:
    """Context manager: the intervention ``cfg`` names, on ``lm``, for the duration of the block (none:
    ``lm`` unchanged)."""
    if cfg.kind is None or cfg.direction is None:
        yield lm
        return
    d = load_direction(cfg.direction)
    if cfg.kind == "ablate":
        context = ablate(lm, d.vector, layers=cfg.layers if cfg.layers is not None else "all")
    else:
        context = steer(
            lm,
            d.vector,
            layers=cfg.layers if cfg.layers is not None else [d.layer],
            alpha=cfg.alpha,
            positions=cfg.positions,  # type: ignore[arg-type]  # checked by InterventionConfig
        )
    with context:
        yield lm
