"""The trade-off study behind ``mosr tradeoff``: train each method at several strengths, evaluate, report.

=================================  ================================================================================
module                             what it holds
=================================  ================================================================================
:mod:`mosr.tradeoff.plan`          :class:`~mosr.tradeoff.plan.StudyPlan` (methods, strengths, sets)
:mod:`mosr.tradeoff.run`           :func:`~mosr.tradeoff.run.run_tradeoff` (train, evaluate, representation stage)
:mod:`mosr.tradeoff.report`        the report: tables, frontier figure
:mod:`mosr.tradeoff.frontier`      the Pareto frontier and its summaries
=================================  ================================================================================
"""
