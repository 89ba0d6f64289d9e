"""Rank-based link-prediction evaluation (MRR, Hits@k, mean rank, AUC), filtered, over all candidates.

Submodules: ``ranking`` (rank/metric math), ``edges`` (split edges as positions), ``filter`` (known-edge
index), ``engine`` (torch scoring and counting), ``evaluate`` (``evaluate_model``, the training-facing API),
``checkpoint_eval`` (``tbg eval``'s driver), ``report`` (table, JSON), ``compat`` (config/graph/checkpoint
checks), ``cli``.  This package's top level imports nothing heavy, so ``tbg export`` can use ``compat``.
"""
