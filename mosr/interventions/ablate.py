"""Directional ablation with hooks: the residual stream never carries a direction ``r̂``.

    with ablate(lm, r):
        generate(lm, harmful_prompts)   # Arditi et al.'s first check: the model stops refusing

As refusal_direction's ``get_all_direction_ablation_hooks`` does, ``x ← x − (x·r̂) r̂`` is applied

* to the input of every block (a forward pre-hook), and
* to the output of every block's attention and MLP sublayer (``ArchSpec.attn`` / ``ArchSpec.mlp``),
  the two things a block adds to the stream,

so the block inputs, the block outputs (the captured layers) and everything written in between are
orthogonal to ``r̂``, at every position, in the prompt and in generated tokens alike. On post-norm
blocks (Gemma 2 / 3) a sublayer output drops the direction its post-norm maps onto ``r̂`` instead
(:mod:`mosr.interventions.residual`), so what reaches the stream is still orthogonal to ``r̂``.

Nested ablations remove the span of their directions (:mod:`mosr.interventions.residual`).
``layers`` restricts all three hooks to some blocks (refusal_direction's default, every block, is
``"all"``). :func:`mosr.interventions.orthogonalize` bakes the same edit into the weights and gives
the same logits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from mosr.capture import Layers, resolve_layers
from mosr.interventions.hooks import Edit, edit_hooks, project_out
from mosr.interventions.residual import SUBLAYERS, ablating, stream_direction, sublayer, unit, write_direction
from mosr.models import LM
from mosr.types import Float


@contextmanager
def ablate(lm: LM, direction: Float[Tensor, " d_model"], layers: Layers = "all") -> Iterator[LM]:
    """Context manager: remove ``direction`` (normalised here) from the residual stream at ``layers``' blocks.

    Args:
        lm: the model (a PEFT adapter injected into ``lm.model`` stays active underneath).
        direction: ``Tensor[d_model]``; only its direction matters.
        layers: ``"all"`` (default), an int or a list of ints: the blocks whose input and sublayer
            outputs are projected.

    Yields ``lm``. Leaving the block removes every hook (also when it raises).
    """
    r_hat = unit(direction, lm)
    layer_ids = resolve_layers(lm, layers)
    with ablating(lm, r_hat) as prior:
        stream = stream_direction(r_hat, prior)  # None: r̂ is in the span of the enclosing ablations
        edit = project_out(stream) if stream is not None else None
        inputs: list[tuple[nn.Module, Edit]] = [(lm.blocks[layer], edit) for layer in layer_ids] if edit else []
        outputs: list[tuple[nn.Module, Edit]] = []
        for layer in layer_ids:
            for which in SUBLAYERS:
                u = write_direction(lm, layer, which, r_hat, prior)
                if u is not None:
                    outputs.append((sublayer(lm, layer, which), edit if edit and u is stream else project_out(u)))
        with edit_hooks(inputs, outputs):
            yield lm
