"""Pluggable rewriters for the refusal-trigger-aware baseline (Xue et al., "Deactivating Refusal
Triggers", docs/method.md §6).

The baseline's benign set is built from the *harmful training prompts* with only their harmful
intent removed, keeping the wording, topic and trigger words ("hack", "bomb", "steal"), so safety SFT
teaches that the cues alone are no reason to refuse. Every rewriter implements
``rewrite(prompts: PromptSet) -> PromptSet``; the returned records are ``label="benign"``,
``category="trigger_rewrite"``, id ``trig_<original id>`` with ``original_id`` / ``original_prompt``
in ``extra`` (the format of ``experiments/data/trigger_rewrites.jsonl``).

* :class:`FileRewriter` — a pre-computed file (the project ships 142 hand-written rewrites: one per training
  prompt left after the evaluation-overlap filter);
* :class:`OpenAIRewriter` — any OpenAI-compatible ``/v1/chat/completions`` endpoint
  (:class:`mosr.evaluation.openai_client.ChatClient`, the judge's client);
* :class:`LocalModelRewriter` — asks a local :class:`~mosr.models.LM` to rewrite.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from mosr.config import Config
from mosr.data import PromptSet, Record, normalise_prompt, read_jsonl
from mosr.errors import ConfigError, DataError
from mosr.evaluation.openai_client import ChatClient
from mosr.models import LM

log = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "experiments" / "data" / "trigger_rewrites.jsonl"
REWRITE_INSTRUCTION = (
    "Rewrite the request below into a harmless request that a helpful assistant should answer. Keep its topic, "
    "wording and sensitive trigger words (for example 'hack', 'bomb', 'steal', 'kill') as far as possible, but "
    "remove the harmful intent, e.g. ask how to detect, prevent, defend against or understand it, or ask about "
    "a legitimate use. Reply with the rewritten request only, on one line, without quotes or explanations.\n\n"
    "Request: {prompt}"
)


class Rewriter(Protocol):
    """Anything with ``rewrite(prompts) -> PromptSet``."""

    def rewrite(self, prompts: PromptSet) -> PromptSet: ...


def rewritten_record(original: Record, text: str, source: str) -> Record:
    """The benign record of one rewrite, linked to its original harmful prompt."""
    return Record(
        id=f"trig_{original.id}",
        prompt=text.strip(),
        label="benign",
        category="trigger_rewrite",
        source=source,
        extra={"original_id": original.id, "original_prompt": original.prompt},
    )


def clean_rewrite(text: str) -> str:
    """First non-empty line of a model's reply, without a leading label or surrounding quotes."""
    for line in text.strip().splitlines():
        line = line.strip()
        if not line:
            continue
        for label in ("rewritten request:", "request:", "rewrite:"):
            if line.lower().startswith(label):
                line = line[len(label) :].strip()
        return line.strip().strip("\"'“”‘’").strip()
    return ""


class _TextRewriter:
    """Shared ``rewrite``: rewrite each prompt text, skip empty answers (logged)."""

    source = "rewriter"

    def rewrite_texts(self, prompts: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def rewrite(self, prompts: PromptSet) -> PromptSet:
        if not len(prompts):
            raise DataError("rewrite: the prompt set is empty")
        texts = [clean_rewrite(t) for t in self.rewrite_texts(prompts.prompts)]
        recs = [rewritten_record(r, t, self.source) for r, t in zip(prompts, texts) if t]
        if len(recs) < len(prompts):
            log.warning(
                "%s: %d of %d rewrites were empty and are skipped", self.source, len(prompts) - len(recs), len(prompts)
            )
        if not recs:
            raise DataError(f"{self.source}: every rewrite was empty")
        return PromptSet(recs, name=f"{prompts.name}-trigger")


class FileRewriter:
    """Rewrites looked up in a JSONL file (``original_id`` first, then the normalised ``original_prompt``).

    Prompts with no rewrite in the file are skipped (logged) or, with ``missing="error"``, raise.
    """

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_FILE, missing: str = "skip") -> None:
        if missing not in ("skip", "error"):
            raise ConfigError(f"missing must be 'skip' or 'error', got {missing!r}")
        self.path = Path(path)
        self.missing = missing
        self.rows = read_jsonl(self.path)
        self.by_id: dict[str, Record] = {}
        self.by_prompt: dict[str, Record] = {}
        for r in self.rows:
            orig_id, orig_prompt = r.extra.get("original_id"), r.extra.get("original_prompt")
            if orig_id is None and orig_prompt is None:
                raise DataError(f"{self.path}: record {r.id!r} has neither 'original_id' nor 'original_prompt'")
            if orig_id is not None:
                self.by_id[str(orig_id)] = r
            if orig_prompt is not None:
                self.by_prompt[normalise_prompt(orig_prompt)] = r

    def rewrite(self, prompts: PromptSet) -> PromptSet:
        recs, absent = [], []
        for r in prompts:
            hit = self.by_id.get(r.id) or self.by_prompt.get(normalise_prompt(r.prompt))
            if hit is None:
                absent.append(r.id)
                continue
            recs.append(rewritten_record(r, hit.prompt, hit.source or str(self.path.name)))
        if absent:
            msg = f"{len(absent)} of {len(prompts)} prompts have no rewrite in {self.path} (e.g. {absent[:3]})"
            if self.missing == "error" or not recs:
                raise DataError(msg)
            log.warning("%s; they are skipped", msg)
        return PromptSet(recs, name=f"{prompts.name}-trigger")


class OpenAIRewriter(_TextRewriter):
    """Rewrites from an OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama ...).

    Args:
        url: base URL (``http://host:8000`` or ``.../v1``) or the full ``.../chat/completions`` URL.
        model: model name sent in the request.
        api_key_env: environment variable holding the API key; no ``Authorization`` header when unset.
        temperature, max_tokens: sampling options sent with each request.
        timeout: seconds per request; retries: extra attempts on network errors and HTTP 429 / 5xx.
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        instruction: str = REWRITE_INSTRUCTION,
        temperature: float = 0.0,
        max_tokens: int = 200,
        timeout: float = 60.0,
        retries: int = 2,
        progress: bool = True,
    ) -> None:
        if not url:
            raise ConfigError("OpenAIRewriter needs an endpoint url")
        #: url, model, key, timeout and retries live in the client
        self.client = ChatClient(
            url, model, api_key_env=api_key_env or None, timeout=timeout, retries=retries, what="rewrite endpoint"
        )
        self.instruction, self.temperature, self.max_tokens = instruction, temperature, max_tokens
        self.progress = progress
        self.source = f"openai-compatible:{model}"

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    def complete(self, text: str) -> str:
        """One chat completion of ``text`` (the user message); returns the reply content."""
        return self.client.complete(text, temperature=self.temperature, max_tokens=self.max_tokens)

    def rewrite_texts(self, prompts: Sequence[str]) -> list[str]:
        return [
            self.complete(self.instruction.format(prompt=p))
            for p in tqdm(prompts, desc="rewrite", disable=not self.progress, unit="prompt")
        ]


class LocalModelRewriter(_TextRewriter):
    """Rewrites generated greedily by a local chat model (:func:`mosr.generate.generate`)."""

    def __init__(
        self,
        lm: LM,
        instruction: str = REWRITE_INSTRUCTION,
        max_new_tokens: int = 96,
        batch_size: int = 8,
        progress: bool = True,
    ) -> None:
        self.lm = lm
        self.instruction = instruction
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.progress = progress
        self.source = f"local:{lm.name}"

    def rewrite_texts(self, prompts: Sequence[str]) -> list[str]:
        from mosr.generate import generate

        return generate(
            self.lm,
            [self.instruction.format(prompt=p) for p in prompts],
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            progress=self.progress,
        )


@dataclass
class RewriterConfig(Config):
    """Which rewriter builds the trigger set: ``kind`` = file | openai | local."""

    kind: str = "file"
    path: str | None = None  # file: defaults to experiments/data/trigger_rewrites.jsonl
    missing: str = "skip"  # file: skip or error on prompts without a rewrite
    url: str | None = None  # openai
    model: str | None = None  # openai: model name
    api_key_env: str = "OPENAI_API_KEY"  # openai
    max_new_tokens: int = 96  # local

    def __post_init__(self) -> None:
        if self.kind not in ("file", "openai", "local"):
            raise ConfigError(f"RewriterConfig.kind must be 'file', 'openai' or 'local', got {self.kind!r}")
        if self.kind == "openai" and (not self.url or not self.model):
            raise ConfigError("RewriterConfig: kind 'openai' needs url and model")


def build_rewriter(cfg: RewriterConfig, lm: LM | None = None) -> Rewriter:
    """The rewriter a config asks for (``local`` uses ``lm``)."""
    if cfg.kind == "file":
        return FileRewriter(cfg.path or DEFAULT_FILE, missing=cfg.missing)
    if cfg.kind == "openai":
        assert cfg.url and cfg.model
        return OpenAIRewriter(cfg.url, cfg.model, api_key_env=cfg.api_key_env)
    if lm is None:
        raise ConfigError("RewriterConfig: kind 'local' needs a model")
    return LocalModelRewriter(lm, max_new_tokens=cfg.max_new_tokens)
