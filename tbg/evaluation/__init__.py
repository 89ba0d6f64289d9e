"""Rank-based link-prediction evaluation (MRR, Hits@k, mean rank, AUC), filtered, over all candidates.

Submodules: ``ranking`` (rank/metric math), ``eval_edges`` (split edges as positions), ``filter`` (known-edge
index), ``engine`` (torch scoring and counting), ``evaluate`` (``evaluate_model``, the training-facing API),
``checkpoint_eval`` (``tbg eval``'s driver), ``output`` (result table, JSON), ``cli``.  Whether a graph and
checkpoint fit the config is :mod:`tbg.consistency`'s answer.
"""
