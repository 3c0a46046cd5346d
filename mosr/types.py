"""Types shared across the package: what mosr needs of a tokenizer, and shape-annotated tensors.

Tensor annotations use jaxtyping's notation, ``Float[Tensor, "batch seq d_model"]``: the string
names the axes (the README's conventions: ``prompt`` = one row per prompt, ``layer`` = the captured
layers, ``seq`` = token positions, ``d_model`` = hidden size, ``vocab`` = vocabulary size). They are
documentation checked by a type checker; nothing is checked at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Bool, Float, Int  # noqa: F401  (re-exported for annotations)


@runtime_checkable
class Tokenizer(Protocol):
    """What mosr uses of a (Hugging Face) tokenizer: encode, decode, the chat template, special ids."""

    chat_template: str | None
    pad_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: str | list[str], *, add_special_tokens: bool = ..., **kwargs: Any) -> Any:
        """Encode; the result has ``.input_ids`` (a list of ids, or one list per text)."""

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str: ...

    def __len__(self) -> int: ...

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> Any: ...
