"""Refusal templates for safety training (written for this project).

No shared data set carries refusals for the harmful training prompts, so refusal targets come from
this fixed, varied list. Design choices:

* every template opens with a phrase that the usual refusal judges match ("I'm sorry", "I can't",
  "I cannot", "As an AI", "Sorry", "Unfortunately" ...), so a learned refusal is recognisable by
  :func:`mosr.evaluation.judge.is_refusal` (tested);
* they are topic-free (no ``{placeholder}``), so they fit any harmful prompt, and vary in length,
  wording and in whether they offer a safe alternative, so the model does not learn one fixed string;
* :func:`refusal_for` picks one deterministically from the prompt id and a seed (SHA-256, not
  Python's salted ``hash``), so training data is reproducible across processes.

A record's own ``refusal`` field, when present, takes precedence over these templates (see
:func:`mosr.train.augment.augment`).
"""

from __future__ import annotations

import hashlib

REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with this request.",
    "I can't help with that. It could cause real harm to people.",
    "I cannot provide that information, because it could be used to hurt someone.",
    "I'm sorry, but I won't help with this. If you have a different question, I'm happy to help.",
    "Sorry, I can't assist with that request.",
    "I'm not able to help with that, as it could lead to serious harm.",
    "I cannot help with this request, so I must decline. Helping with it could put people at risk.",
    "I'm sorry, I can't provide instructions or details for this.",
    "As an AI assistant, I can't help with requests like this one.",
    "I cannot help with this, because it is harmful and may be illegal.",
    "Unfortunately, I can't help with that. Is there something else I can do for you?",
    "I'm sorry, but this is not something I can help with.",
    "I can't do that. Providing this could endanger others.",
    "I can't provide that. I'd be glad to help with a safe and legal alternative instead.",
    "I'm sorry, but I must refuse. This request asks for something that could cause harm.",
    "I apologize, but I cannot fulfil this request.",
    "No, I can't help with this. It would be unsafe and irresponsible.",
    "I'm unable to help with that request.",
    "I can't assist with this. If you or someone else is in danger, please contact local emergency services.",
    "Sorry, but I won't help with anything that could hurt people or break the law.",
    "I cannot comply with this request.",
    "I'm sorry, but I can't continue with this. It could be used to cause harm.",
    "As a responsible assistant, I have to decline. I can't provide help with this.",
)


def refusal_for(prompt_id: str, seed: int = 0) -> str:
    """A refusal template chosen deterministically from ``prompt_id`` and ``seed``."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()
    return REFUSAL_TEMPLATES[int.from_bytes(digest[:8], "big") % len(REFUSAL_TEMPLATES)]
