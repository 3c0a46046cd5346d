"""Evaluation: generate responses, judge them, score them.

=====================================  ============================================================================
module                                 what it holds
=====================================  ============================================================================
:mod:`mosr.evaluation.run`             :func:`~mosr.evaluation.run.evaluate` (``mosr eval``), ``compare``, sets
:mod:`mosr.evaluation.judge`           the refusal judges (string match, refusal score, LLM judge)
:mod:`mosr.evaluation.degenerate`      the degenerate-output detector of the string judge
:mod:`mosr.evaluation.metrics`         per-set rates, AUROC, tables
:mod:`mosr.evaluation.displacement`    the representation displacement score of a trained model
:mod:`mosr.evaluation.openai_client`   the OpenAI-compatible chat client of the LLM judge and the rewriter
=====================================  ============================================================================
"""
