"""Queries over a trained model: nearest neighbours of an entity and top predictions under a relation.

Candidates are retrieved from faiss indexes built once per checkpoint (exact for small partitions,
IVF for large ones) and cached in ``save_dir/query_index/``; every returned score is recomputed by the
model's own score function (:class:`tbg.model.scoring.RelationModel`), so ``tbg predict`` ranks exactly as
``tbg eval`` scores.  Nothing here is imported by ``import tbg``; faiss and torch load on first use.
"""
