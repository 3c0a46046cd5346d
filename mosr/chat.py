"""Chat formatting: the one place where prompts meet the tokenizer's chat template.

``format_chat(tokenizer, prompts)`` applies the template with the assistant header appended
(``add_generation_prompt=True``), so the last token of each text is the post-instruction position.
The texts already hold the template's BOS token: tokenize them with ``add_special_tokens=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mosr.errors import ChatTemplateError, DataError
from mosr.types import Tokenizer


def require_chat_template(tokenizer: Tokenizer) -> None:
    """A :class:`~mosr.errors.ChatTemplateError` unless ``tokenizer`` has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) has no chat "
            "template: set tokenizer.chat_template, or pass chat=False to use raw prompts"
        )


def format_chat(
    tokenizer: Tokenizer, prompts: Sequence[str], system: str | None = None, responses: Sequence[str] | None = None
) -> list[str]:
    """Apply the tokenizer's chat template to user prompts.

    Without ``responses`` the assistant header is appended (``add_generation_prompt=True``): the last
    token is the post-instruction position. With ``responses`` each text is the prompt's formatted
    prefix followed by the raw response, so prompt tokens are identical in both forms.
    The result already contains the template's BOS token: tokenize it with ``add_special_tokens=False``.
    """
    require_chat_template(tokenizer)
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"prompt {i} is empty")
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(text + responses[i] if responses is not None else text)
    return out


def template_head(tokenizer: Tokenizer, system: str | None = None) -> int:
    """How many leading tokens the chat template puts before every user prompt (BOS, a default system
    prompt, the user header): the common prefix of two formatted prompts' token ids. Under causal
    attention a token there has the same hidden state whatever the prompt."""
    a, b = (
        list(x)
        for x in tokenizer(format_chat(tokenizer, ["A", "Z"], system=system), add_special_tokens=False).input_ids
    )
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
