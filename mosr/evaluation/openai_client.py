"""The one client for OpenAI-compatible chat-completion endpoints (OpenAI, vLLM, llama.cpp server,
Ollama, ...), used by the LLM judge (:class:`mosr.evaluation.judge.LLMJudge`) and the trigger rewriter
(:class:`mosr.train.trigger.OpenAIRewriter`). Plain ``urllib``, no SDK.

URL rule (:func:`chat_completions_url`): a URL that ends in ``/chat/completions`` is used as it is;
otherwise ``/v1`` is appended unless the URL already ends in ``/v1``, then ``/chat/completions``. So
``http://h:8000`` and ``http://h:8000/v1`` both post to ``http://h:8000/v1/chat/completions``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from mosr.errors import ConfigError, MosrError


def chat_completions_url(url: str) -> str:
    """The ``.../v1/chat/completions`` endpoint of a base URL (see the module docstring)."""
    base = url.strip().rstrip("/")
    if not base:
        raise ConfigError("an OpenAI-compatible endpoint needs a url, e.g. http://127.0.0.1:8000/v1")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


class ChatClient:
    """POST chat completions to one endpoint and return the reply text.

    Args:
        url: base URL (``http://host:8000`` or ``.../v1``) or the full ``.../chat/completions`` URL.
        model: model name sent with each request.
        api_key: key sent as ``Authorization: Bearer``; else the value of ``api_key_env`` at request
            time; no header when neither is set.
        timeout: seconds per request.
        retries: extra attempts on network errors and HTTP 429 / 5xx (other HTTP errors fail at once).
        what: how errors name the endpoint ("LLM judge", "rewrite endpoint").
    """

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        retries: int = 0,
        what: str = "chat endpoint",
    ) -> None:
        self.endpoint = chat_completions_url(url)
        self.model = model
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries
        self.what = what

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` (``model`` filled in) and return the decoded JSON answer."""
        data = json.dumps({"model": self.model, **body}).encode()
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.endpoint, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-configured URL
                    raw = resp.read()
                break
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}"
                if e.code != 429 and e.code < 500:
                    raise MosrError(f"{self.what} {self.endpoint} refused the request ({last})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"unreachable ({getattr(e, 'reason', e)}); check the url"
            if attempt < self.retries:
                time.sleep(min(2.0**attempt, 10.0))
        else:
            raise MosrError(f"{self.what} {self.endpoint} failed after {self.retries + 1} attempt(s): {last}")
        try:
            return json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MosrError(f"{self.what} {self.endpoint} did not return JSON: {raw[:200]!r}") from None

    def complete(self, text: str, temperature: float = 0.0, max_tokens: int = 200) -> str:
        """The reply to one user message ``text``."""
        payload = self.post(
            {"temperature": temperature, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
        )
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise MosrError(
                f"{self.what} {self.endpoint} returned no choices[0].message.content: {json.dumps(payload)[:300]}"
            ) from None
