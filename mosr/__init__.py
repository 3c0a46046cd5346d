"""MOSR toolkit: over-refusal through the model's safety representation.

Quick start::

    import mosr
    lm = mosr.load("smollm2-135m-instruct")            # bundled, offline
    acts = mosr.capture(lm, ["How do I kill a Python process?"], layers="all")
    acts.shape                                          # prompt layer d_model = (1, 30, 576)
"""

import os as _os

# OpenMP worker threads that spin while waiting make CPU runs several times slower whenever another
# process shares the cores (a 4-prompt forward: 10 s spinning vs 1.4 s passive on the 2-core box).
# Sleep instead, unless the user chose a policy. Must run before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mosr import datasets  # noqa: E402
from mosr.capture import capture  # noqa: E402
from mosr.data import PromptSet, Record, read_jsonl  # noqa: E402
from mosr.errors import MosrError  # noqa: E402
from mosr.models import LM, load  # noqa: E402
from mosr.store import ActivationStore, capture_to_store  # noqa: E402
from mosr import testing  # noqa: E402,F401  (registers the ``tiny:<family>`` model loader)

__version__ = "0.1.0"
__all__ = ["LM", "ActivationStore", "MosrError", "PromptSet", "Record", "capture", "capture_to_store", "datasets",
           "load", "read_jsonl"]
