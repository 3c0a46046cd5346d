"""Tiny random models of every registered family, for tests and examples (no download).

``tiny_lm("llama")`` builds a 3-layer model with a small byte-level BPE tokenizer trained in-process
and a ChatML chat template. Importing this module (``import mosr`` does) registers the ``tiny:``
loader with :func:`mosr.models.register_loader`, so ``mosr.load("tiny:llama")`` works everywhere a
model name is accepted (configs, ``--model``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

import torch

from mosr.errors import ModelError
from mosr.models import LM, from_model, register_loader
from mosr.types import Tokenizer

FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2", "gemma2", "gpt2")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "How do I kill a Python process?",
    "Write a poem about the sea.",
    "Explain how a bomb squad works.",
    "I'm sorry, but I cannot help with that.",
    "Sure, here is a recipe for pancakes.",
    "As an AI, I can't do that. Unfortunately no. Here are the steps. Certainly! Yes. The first step",
    "hello world, the quick brown fox jumps over the lazy dog 0123456789 ?!.,;:'\"()[]{}",
]


@lru_cache(maxsize=1)
def tiny_tokenizer() -> Tokenizer:
    """A ~400-token byte-level BPE tokenizer with ChatML special tokens and template."""
    from tokenizers import Tokenizer as BPETokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = BPETokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return cast(Tokenizer, fast)  # transformers' class is wider than the protocol's view of it


def tiny_config(family: str, vocab_size: int, n_layers: int = 3) -> Any:
    import transformers as tf

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, final_logit_softcapping=30.0, sliding_window=64)
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=n_layers,
            n_head=4,
            n_positions=256,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise ModelError(f"unknown tiny model family {family!r}; choose from {FAMILIES}")


def tiny_lm(family: str = "llama", n_layers: int = 3, seed: int = 0) -> LM:
    """A tiny randomly initialised :class:`~mosr.models.LM` of ``family`` (float32, CPU, eval mode)."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok), n_layers), attn_implementation="eager")
    return from_model(model, tok, name=f"tiny-{family}")


register_loader("tiny", tiny_lm, what="family")
