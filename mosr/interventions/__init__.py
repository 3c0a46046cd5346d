"""Interventions on the residual stream: steering, directional ablation, weight orthogonalisation, and
the directions they use (the refusal direction, the false-refusal vector).

    import mosr
    from mosr.interventions import ablate, load_direction, steer

    lm = mosr.load("smollm2-135m-instruct")
    r = load_direction("runs/refusal-dir")           # written by `mosr direction --kind refusal`
    with ablate(lm, r.vector):                       # the stream never carries r̂
        mosr.generate.generate(lm, harmful_prompts)
    with steer(lm, r.vector, layers=[r.layer], alpha=1.0):
        mosr.generate.generate(lm, harmless_prompts)

Every intervention is a context manager that composes with the others (nesting), with generation,
capture, LogitLens and PEFT adapters injected into ``lm.model``; leaving it restores the model exactly
(hooks removed, weights bit-identical), also when its body raises.
"""

from mosr.interventions.ablate import ablate
from mosr.interventions.directions import (
    Candidates,
    Direction,
    load_direction,
    mean_diff,
    partial_orthogonalize,
    post_instruction_positions,
)
from mosr.interventions.find import DirectionConfig, find_direction
from mosr.interventions.orthogonalize import orthogonalize, orthogonalize_weights
from mosr.interventions.steer import steer

__all__ = [
    "Candidates",
    "Direction",
    "DirectionConfig",
    "ablate",
    "find_direction",
    "load_direction",
    "mean_diff",
    "orthogonalize",
    "orthogonalize_weights",
    "partial_orthogonalize",
    "post_instruction_positions",
    "steer",
]
