#!/usr/bin/env python3
"""Build the WordNet 3.0 knowledge graph (the training benchmark's real graph) from Debian's wordnet-base.

    apt-get update && apt-get install -y wordnet-base
    python tools/build_wordnet.py            # -> data/wordnet/{train,valid,test}.tsv
    python tools/build_wordnet.py --typed    # also data/wordnet_typed/{train,valid,test}.tsv (same split)

Choices (they fix the counts the benchmark notes quote):

- Every pointer in data.noun/verb/adj/adv becomes one synset->synset edge, semantic pointers (source/target
  field ``0000``) and lexical ones (word-to-word, e.g. antonyms, derivations) alike: a lexical pointer is
  lifted to the synsets that hold the two words.  Edges are deduplicated on (lhs, rel, rhs), so several
  word pairs linking the same two synsets count once.
- Entity name = ``<offset>.<pos>``, e.g. ``00001740.n``.  Adjective satellites (``s``) live in data.adj
  with the head adjectives and share its offset space, so they are named ``.a`` wherever they appear
  (as synset or as pointer target): one synset, one name.
- Relation = pointer *type*, named by its symbol.  WordNet's documentation (wninput(5WN)) defines 27
  types over 26 symbols: ``\\`` means "pertainym" from an adjective but "derived from adjective" from an
  adverb.  The adverb one is named ``\\r`` (symbol + pos, like the entity names); the other 26 keep their
  plain symbol.  :data:`RELATIONS` is that table; configs/wordnet.yaml lists the same 27 names in order.
- Split: edges are shuffled with ``--seed``; walking that order, an edge is held out while both its
  entities and its relation keep at least one other train edge, until 5,000 valid + 5,000 test edges are
  taken.  So every held-out entity and relation occurs in train.  Train is written reshuffled.

- Typed variant (``--typed``): the same edges and split, with entity type = part of speech (tables ``n``,
  ``v``, ``a``, ``r``; satellites are ``a``) and each relation split by its (lhs, rhs) parts of speech, named
  ``<symbol>:<lhs pos><rhs pos>`` (e.g. ``+:nv``), so relations have different candidate sets.
  :func:`typed_config_relations` lists them for configs/wordnet_typed.yaml.

Output: ``lhs<TAB>rel<TAB>rhs`` per line, no header, each file written to a temp name and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

WORDNET_DIR = "/usr/share/wordnet"
POS_FILES = ("noun", "verb", "adj", "adv")

# Relation name -> meaning, in the order configs/wordnet.yaml lists them (relation id = position).
RELATIONS: dict[str, str] = {
    "!": "antonym",
    "@": "hypernym",
    "@i": "instance hypernym",
    "~": "hyponym",
    "~i": "instance hyponym",
    "#m": "member holonym",
    "#s": "substance holonym",
    "#p": "part holonym",
    "%m": "member meronym",
    "%s": "substance meronym",
    "%p": "part meronym",
    "=": "attribute",
    "+": "derivationally related form",
    ";c": "domain of synset - topic",
    "-c": "member of this domain - topic",
    ";r": "domain of synset - region",
    "-r": "member of this domain - region",
    ";u": "domain of synset - usage",
    "-u": "member of this domain - usage",
    "*": "entailment",
    ">": "cause",
    "^": "also see",
    "$": "verb group",
    "&": "similar to",
    "<": "participle of verb",
    "\\": "pertainym (pertains to noun)",
    "\\r": "derived from adjective (adverb pointer)",
}


def relation_name(symbol: str, source_pos: str) -> str:
    """The pointer type of ``symbol`` on a synset of ``source_pos`` (only ``\\`` depends on the pos)."""
    return "\\r" if symbol == "\\" and source_pos == "r" else symbol


def _norm_pos(pos: str) -> str:
    return "a" if pos == "s" else pos


def parse_data_file(path: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """All pointers of one ``data.<pos>`` file as (lhs, rel, rhs) name triples (not yet deduplicated)."""
    edges: list[tuple[str, str, str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            pos = _norm_pos(fields[2])
            lhs = f"{fields[0]}.{pos}"
            i = 4 + 2 * int(fields[3], 16)  # skip the words (w_cnt is hexadecimal)
            count = int(fields[i])
            i += 1
            for _ in range(count):
                symbol, offset, target_pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                rel = relation_name(symbol, pos)
                if rel not in RELATIONS:
                    raise ValueError(f"{path}: synset {lhs}: unknown pointer symbol {symbol!r}")
                edges.append((lhs, rel, f"{offset}.{_norm_pos(target_pos)}"))
    return edges


def split_edges(
    edges: np.ndarray, num_valid: int, num_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of an (n, 3) array of ints where every held-out entity and relation stays in train."""
    rng = np.random.default_rng(seed)
    edges = edges[rng.permutation(len(edges))]
    num_entities = int(max(edges[:, 0].max(), edges[:, 2].max())) + 1
    ent_deg = np.bincount(edges[:, 0], minlength=num_entities) + np.bincount(edges[:, 2], minlength=num_entities)
    rel_deg = np.bincount(edges[:, 1])
    want = num_valid + num_test
    held: list[int] = []
    for k, (lhs, rel, rhs) in enumerate(edges.tolist()):
        if len(held) == want:
            break
        need = 2 if lhs == rhs else 1  # a self-loop holds its entity twice
        if ent_deg[lhs] > need and ent_deg[rhs] > need and rel_deg[rel] > 1:
            ent_deg[lhs] -= 1
            ent_deg[rhs] -= 1
            rel_deg[rel] -= 1
            held.append(k)
    if len(held) < want:
        raise ValueError(f"only {len(held)} edges can be held out, {want} requested")
    mask = np.zeros(len(edges), dtype=bool)
    mask[held] = True
    held_edges = edges[held]
    train = edges[~mask]
    # reshuffle: the walk leaves the edges it could not hold out (low-degree entities) at the front
    return train[rng.permutation(len(train))], held_edges[:num_valid], held_edges[num_valid:]


def _write_tsv(path: Path, edges: np.ndarray, entities: np.ndarray, relations: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    rel_names = np.array(relations, dtype=object)
    lines = entities[edges[:, 0]] + "\t" + rel_names[edges[:, 1]] + "\t" + entities[edges[:, 2]]
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines.tolist()))
        fh.write("\n")
    os.replace(tmp, path)


POS_TABLES = ("n", "v", "a", "r")


def typed_relations(edges: np.ndarray, entities: np.ndarray, relations: list[str]) -> tuple[np.ndarray, list[str]]:
    """Relation ids and names of the typed variant: each relation split by its (lhs, rhs) parts of speech,
    in :data:`RELATIONS` order, then pos order."""
    pos = np.array([POS_TABLES.index(name.rsplit(".", 1)[1]) for name in entities.tolist()], dtype=np.int64)
    key = (edges[:, 1] * len(POS_TABLES) + pos[edges[:, 0]]) * len(POS_TABLES) + pos[edges[:, 2]]
    keys, typed = np.unique(key, return_inverse=True)
    names = []
    for k in keys.tolist():
        rel, rest = divmod(k, len(POS_TABLES) ** 2)
        lp, rp = divmod(rest, len(POS_TABLES))
        names.append(f"{relations[rel]}:{POS_TABLES[lp]}{POS_TABLES[rp]}")
    return typed.reshape(-1), names


def typed_config_relations(names: list[str]) -> str:
    """The ``model.relations`` YAML block of configs/wordnet_typed.yaml for typed relation ``names``."""
    lines = []
    for name in names:
        symbol, pair = name.rsplit(":", 1)
        quoted = "'" + name.replace("'", "''") + "'"
        lines.append(
            f"    - {{name: {quoted}, lhs: {pair[0]}, rhs: {pair[1]}, operator: translation}}  # {RELATIONS[symbol]}"
        )
    return "\n".join(lines) + "\n"


def build(
    wordnet_dir: str,
    out_dir: str,
    num_valid: int = 5000,
    num_test: int = 5000,
    seed: int = 0,
    typed_dir: str | None = None,
) -> dict:
    """Parse, deduplicate, split and write (the typed variant too when ``typed_dir``); returns the counts."""
    raw: list[tuple[str, str, str]] = []
    for pos in POS_FILES:
        path = Path(wordnet_dir) / f"data.{pos}"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: install Debian's wordnet-base (apt-get install wordnet-base)")
        raw += parse_data_file(path)
    triples = np.array(raw, dtype=object)
    entities, ent_ids = np.unique(np.concatenate([triples[:, 0], triples[:, 2]]).astype(str), return_inverse=True)
    relations = list(RELATIONS)
    rel_index = {name: i for i, name in enumerate(relations)}
    n = len(triples)
    ids = np.stack([ent_ids[:n], np.array([rel_index[r] for r in triples[:, 1]]), ent_ids[n:]], axis=1)
    ids = np.unique(ids, axis=0)  # deduplicate (sorted, so the split below depends only on the seed)
    train, valid, test = split_edges(ids, num_valid, num_test, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = entities.astype(object)
    for split, edges in (("train", train), ("valid", valid), ("test", test)):
        _write_tsv(out / f"{split}.tsv", edges, names, relations)
    used = np.unique(np.concatenate([train[:, 0], train[:, 2]]))
    typed_counts = {}
    if typed_dir is not None:
        splits = {"train": train, "valid": valid, "test": test}
        stacked = np.concatenate(list(splits.values()))
        typed_rel, typed_names = typed_relations(stacked, entities, relations)
        typed_out = Path(typed_dir)
        typed_out.mkdir(parents=True, exist_ok=True)
        start = 0
        for split, edges in splits.items():
            retyped = edges.copy()
            retyped[:, 1] = typed_rel[start : start + len(edges)]
            start += len(edges)
            _write_tsv(typed_out / f"{split}.tsv", retyped, names, typed_names)
        train_rels = np.unique(typed_rel[: len(train)])
        typed_counts = {"typed_relations": len(typed_names), "typed_relations_in_train": int(len(train_rels))}
    return {
        "pointers": n,
        "edges": len(ids),
        "entities": int(len(used)),
        "relations": int(len(np.unique(ids[:, 1]))),
        "train": len(train),
        "valid": len(valid),
        "test": len(test),
        "seed": seed,
        **typed_counts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet-dir", default=WORDNET_DIR, help=f"dir with data.noun etc. (default {WORDNET_DIR})")
    ap.add_argument("--out", default="data/wordnet", help="output dir (default data/wordnet)")
    ap.add_argument("--valid", type=int, default=5000, help="validation edges (default 5000)")
    ap.add_argument("--test", type=int, default=5000, help="test edges (default 5000)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ap.add_argument("--typed", action="store_true", help="also write the typed variant to --typed-out")
    ap.add_argument("--typed-out", default="data/wordnet_typed", help="typed output dir (default data/wordnet_typed)")
    ap.add_argument("--print-typed-relations", action="store_true", help="print the typed model.relations YAML")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        typed_dir = args.typed_out if args.typed else None
        counts = build(args.wordnet_dir, args.out, args.valid, args.test, args.seed, typed_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"build_wordnet: error: {exc}", file=sys.stderr)
        return 2
    counts["wall_s"] = round(time.perf_counter() - start, 2)
    if args.typed and args.print_typed_relations:
        names = sorted(
            {
                line.split("\t")[1]
                for split in ("train", "valid", "test")
                for line in open(Path(args.typed_out) / f"{split}.tsv", encoding="utf-8")
            }
        )
        order = {name: i for i, name in enumerate(RELATIONS)}
        names.sort(key=lambda n: (order[n.rsplit(":", 1)[0]], n))
        print(typed_config_relations(names), end="")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
