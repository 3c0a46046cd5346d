"""Hooks that edit what a module reads or returns, on the mechanism capture uses.

:func:`mosr.capture.hooked` hooks decoder-block outputs (a hook's returned tensor replaces the
output); :func:`edit_hooks` is the same thing for any module, on its input (a forward pre-hook) or its
output (a forward hook), which directional ablation needs for block inputs and for the attention and
MLP outputs inside a block. Both unwrap a module's tensor-or-tuple result with
:func:`mosr.capture.block_output` and rewrap it with :func:`mosr.capture.with_hidden`.

Edit hooks are registered with ``prepend=True``: they run before the hooks already on a module, so an
intervention entered inside a capture still changes what the capture records. Leaving the context
removes every hook it added, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from mosr.capture import States, block_output, with_hidden
from mosr.types import Float

#: ``h -> new h`` (batch seq d_model), applied to a module's input or output hidden state
Edit = Callable[[States], States]


@contextmanager
def edit_hooks(
    inputs: Sequence[tuple[nn.Module, Edit]] = (), outputs: Sequence[tuple[nn.Module, Edit]] = ()
) -> Iterator[None]:
    """Context manager: for each ``(module, edit)`` of ``inputs``, the module's hidden-state input
    (first positional argument, else the ``hidden_states`` keyword) is replaced by ``edit(h)``; for each
    of ``outputs``, its output hidden state (the tensor, or the first item of a tuple)."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module, edit in inputs:
            handles.append(module.register_forward_pre_hook(_input_hook(edit), with_kwargs=True, prepend=True))
        for module, edit in outputs:
            handles.append(module.register_forward_hook(_output_hook(edit), prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_hook(edit: Edit) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]] | None]:
    def hook(
        _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if args and isinstance(args[0], Tensor):
            return (edit(args[0]), *args[1:]), kwargs
        if isinstance(kwargs.get("hidden_states"), Tensor):
            return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
        return None

    return hook


def _output_hook(edit: Edit) -> Callable[..., States | tuple[Tensor, ...]]:
    def hook(_module: nn.Module, _inputs: object, output: States | tuple[Tensor, ...]) -> States | tuple[Tensor, ...]:
        return with_hidden(output, edit(block_output(output)))

    return hook


def project_out(u: Float[Tensor, " d_model"]) -> Edit:
    """``h -> h − (h·u) u`` for a unit vector ``u``, computed in float32 and returned in ``h``'s dtype.

    ``u`` is moved to ``h``'s device once and cached, so the hook never copies from the host again."""
    cache: dict[torch.device, Tensor] = {}

    def edit(h: States) -> States:
        v = cache.get(h.device)
        if v is None:
            v = cache[h.device] = u.to(h.device, torch.float32)
        x = h.float()
        return (x - (x @ v).unsqueeze(-1) * v).to(h.dtype)

    return edit
