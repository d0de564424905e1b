"""The support judge against hand labels of what the local model actually writes (issue #10).

    python -m bench.support_judge LABELLED.jsonl [...] [--grid]

Each row: question, facts ([n, text] the model was shown), sentence, supported (the label).
Rows are split into tuning and blind halves by a hash of the question, fixed before any label
was read; `--grid` chooses among settings on the tuning half only, and both halves are reported.
Rates: agreement; false "supported" among unsupported sentences (FPR); unsupported among the
sentences the judge lets through (what a user would be served).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

from chatbot import grounding
from chatbot.chunking import sentence_spans
from chatbot.config import Settings
from chatbot.embedding import MiniLMEmbedder, Remembering


def half(question: str) -> str:
    return "tuning" if hashlib.sha256(question.encode()).digest()[0] % 2 == 0 else "blind"


def judge(row: dict, embedder, threshold: float, family: float, zipf: float,
          hedges: bool, one_sentence: bool) -> bool:
    """Supported by any one fact, as the pipeline judges a sentence against each passage."""
    vec = embedder.embed([row["sentence"]])[0]
    for _, text in row["facts"]:
        sentences = [text[a:b] for a, b in sentence_spans(text)] or [text]
        verdict = grounding.support(row["sentence"], vec, sentences, embedder.embed(sentences),
                                    threshold, zipf, embedder.embed, family, hedges, one_sentence)
        if verdict.supported:
            return True
    return False


def rates(pairs: list[tuple[bool, bool]]) -> dict:
    got_yes = [want for got, want in pairs if got]
    unsupported = [got for got, want in pairs if not want]
    return {"n": len(pairs), "agreement": sum(g == w for g, w in pairs) / max(1, len(pairs)),
            "fpr": sum(unsupported) / max(1, len(unsupported)),
            "served_unsupported": got_yes.count(False) / max(1, len(got_yes)),
            "kept_supported": sum(g for g, w in pairs if w) / max(1, sum(w for _, w in pairs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labelled", nargs="+", type=Path)
    ap.add_argument("--grid", action="store_true")
    args = ap.parse_args()
    rows = [json.loads(line) for p in args.labelled for line in p.read_text().splitlines()]
    for r in rows:  # tests/data/support_labels.jsonl: one passage (heading, blank line, text)
        r.setdefault("question", r["sentence"])
        r.setdefault("facts", [[1, r.get("passage", "").split("\n\n", 1)[-1]]])
    embedder, s = Remembering(MiniLMEmbedder()), Settings()  # a grid re-judges the same texts
    grid = (itertools.product([0.7, 0.75, 0.8], [1.0, 0.75], [s.claim_zipf], [False, True],
                              [False, True])
            if args.grid else [(s.support_threshold, s.family_similarity, s.claim_zipf,
                                s.certainty_check, s.one_sentence_support)])
    for threshold, family, zipf, hedges, one in grid:
        out = {}
        for name in ("tuning", "blind"):
            part = [r for r in rows if half(r["question"]) == name]
            out[name] = rates([(judge(r, embedder, threshold, family, zipf, hedges, one),
                                r["supported"]) for r in part])
        print(json.dumps({"threshold": threshold, "family_similarity": family,
                          "certainty_check": hedges, "one_sentence_support": one, **{
            k: {m: round(v, 3) for m, v in d.items()} for k, d in out.items()}}))


if __name__ == "__main__":
    main()
