"""Finding the chunks that best match a question: dense (FAISS) and lexical (BM25), blended.

Dense similarity finds paraphrases; BM25 rewards the rare exact words (a device name, "FBSS")
that small embedding models blur. The blend keeps the dense cosine as the base so scores stay
comparable across questions (the refusal threshold reads them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import bm25s
import numpy as np

from chatbot import models
from chatbot.chunking import Chunk
from chatbot.index import Index
from chatbot.text import terms

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets itself to DEBUG on import


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # the blended score the hits are ranked by
    dense: float  # cosine similarity of question and chunk, -1..1


class Retriever:
    def __init__(self, index: Index, lexical_weight: float = 0.2, candidates: int = 50):
        self.index = index
        self.lexical_weight = lexical_weight
        self.candidates = candidates

    @cached_property
    def bm25(self) -> bm25s.BM25:
        retriever = bm25s.BM25()
        retriever.index([terms(c.embed_text) or ["_"] for c in self.index.chunks], show_progress=False)
        return retriever

    def _lexical(self, query: str) -> np.ndarray:
        """BM25 score of every chunk, scaled so the best is 1 (all zero when no word matches)."""
        q = terms(query)
        scores = self.bm25.get_scores(q) if q else np.zeros(len(self.index.chunks))
        top = float(np.max(scores)) if len(scores) else 0.0
        return scores / top if top > 0 else np.zeros_like(scores)

    def search(self, query: str, k: int) -> list[Hit]:
        qvec = models.embed([query])
        n = min(len(self.index.chunks), max(self.candidates, k))
        dense_scores, ids = self.index.search(qvec, n)
        dense = {int(i): float(s) for s, i in zip(dense_scores[0], ids[0]) if i >= 0}
        lexical = self._lexical(query) if self.lexical_weight else None
        if lexical is not None:
            for i in np.argsort(-lexical)[:n]:  # strong keyword matches the dense pass missed
                if lexical[i] > 0 and int(i) not in dense:
                    dense[int(i)] = float(self.index.faiss.reconstruct(int(i)) @ qvec[0])
        blended = {i: d + (self.lexical_weight * float(lexical[i]) if lexical is not None else 0.0)
                   for i, d in dense.items()}
        best = sorted(blended, key=blended.get, reverse=True)[:k]
        return [Hit(self.index.chunks[i], blended[i], dense[i]) for i in best]
