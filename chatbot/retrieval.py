"""Finding the chunks that best match a question: dense (FAISS), lexical (BM25), or both fused.

Dense similarity finds paraphrases; BM25 rewards the rare exact words (a device name, "FBSS",
`lru_cache`) that small embedding models blur. Modes, switchable for measurement:
  dense  - cosine similarity only
  bm25   - BM25 only (scaled so the best match is 1)
  blend  - dense cosine + lexical_weight * scaled BM25 + title_weight * the cosine of the question
           and the chunk's document title (the default: the dense cosine stays the base, so
           scores stay comparable across questions)
  rrf    - reciprocal rank fusion of the two rankings (scale-free, ignores score gaps)
Then, in every mode, each further chunk from a document already ranked higher loses a `diversity`
share of its score, so five hits tend to show several documents instead of five pieces of one
page (a one-file corpus keeps its order: the penalty grows with rank, like the scores fall).
Whatever the mode, every Hit carries the dense cosine, which the refusal threshold reads.
There is no cross-encoder reranker: none ships with its weights in a package we can install
(docs/retrieval.md has the measurements behind these choices, and a bi-encoder rerank we tried).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chatbot.chunking import Chunk
from chatbot.config import Settings
from chatbot.embedding import Embedder
from chatbot.index import Index
from chatbot.text import terms

MODES = ("dense", "bm25", "blend", "rrf")


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # what the hits are ranked by (its scale depends on the mode)
    dense: float  # cosine similarity of question and chunk, -1..1


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest positive scores, best first, without sorting the whole array."""
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=int)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    part = part[scores[part] > 0]
    return part[np.argsort(-scores[part], kind="stable")]


def diversify(scores: dict[int, float], chunks: list[Chunk], share: float) -> dict[int, float]:
    """Chunk id -> score, best first, where the n-th further chunk of a document (in score order)
    has lost 1 - (1 - share)^n of its score."""
    seen: dict[str, int] = {}
    out = {}
    for i in sorted(scores, key=scores.get, reverse=True):
        n = seen[chunks[i].source] = seen.get(chunks[i].source, -1) + 1
        out[i] = scores[i] - abs(scores[i]) * (1 - (1 - share) ** n)
    return dict(sorted(out.items(), key=lambda item: item[1], reverse=True))


class Retriever:
    def __init__(self, index: Index, embedder: Embedder, lexical_weight: float = 0.2,
                 candidates: int = 50, mode: str = "blend", rrf_k: int = 60,
                 title_weight: float = 0.2, diversity: float = 0.1):
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; choose one of {', '.join(MODES)}")
        self.index = index
        self.embedder = embedder
        self.lexical_weight = lexical_weight
        self.candidates = candidates
        self.mode = mode
        self.rrf_k = rrf_k
        self.title_weight = title_weight if index.title_vectors is not None else 0.0
        self.diversity = diversity

    @classmethod
    def from_settings(cls, index: Index, settings: Settings, embedder: Embedder) -> "Retriever":
        return cls(index, embedder, settings.lexical_weight, mode=settings.retrieval_mode,
                   rrf_k=settings.rrf_k, title_weight=settings.title_weight,
                   diversity=settings.diversity)

    def lexical(self, query: str) -> np.ndarray:
        """BM25 score of every chunk, scaled so the best is 1 (all zero when no word matches)."""
        q = terms(query)
        scores = self.index.bm25.get_scores(q) if q else np.zeros(len(self.index.chunks))
        top = float(np.max(scores)) if len(scores) else 0.0
        return scores / top if top > 0 else np.zeros_like(scores)

    def _cosines(self, qvec: np.ndarray, ids: list[int]) -> dict[int, float]:
        if not ids:
            return {}
        return dict(zip(ids, (self.index.vectors(ids) @ qvec[0]).tolist()))

    def search(self, query: str, k: int, qvec: np.ndarray | None = None) -> list[Hit]:
        """Top k chunks; pass the query's vector (shape 1 x dim) if you have it already."""
        qvec = self.embedder.embed([query]) if qvec is None else qvec
        n = min(len(self.index.chunks), max(self.candidates, k))
        dense: dict[int, float] = {}  # chunk id -> cosine, in dense rank order
        if self.mode != "bm25":
            scores, ids = self.index.search(qvec, n)
            dense = {int(i): float(s) for s, i in zip(scores[0], ids[0]) if i >= 0}
        use_lexical = self.mode in ("bm25", "rrf") or (self.mode == "blend" and self.lexical_weight)
        lexical = self.lexical(query) if use_lexical else None
        lex_ids = [int(i) for i in _top(lexical, n)] if lexical is not None else []

        if self.mode == "dense":
            ranked = dense
        elif self.mode == "bm25":
            ranked = {i: float(lexical[i]) for i in lex_ids}
        elif self.mode == "blend":
            # strong keyword matches the dense pass missed get their cosine too
            dense.update(self._cosines(qvec, [i for i in lex_ids if i not in dense]))
            ranked = {i: d + (self.lexical_weight * float(lexical[i])
                              if lexical is not None else 0.0)
                      for i, d in dense.items()}
            if self.title_weight:
                titles = np.asarray(self.index.title_vectors) @ qvec[0]
                rows = self.index.title_rows
                ranked = {i: s + self.title_weight * float(titles[rows[i]])
                          for i, s in ranked.items()}
        else:
            ranked = {}
            for ranking in (list(dense), lex_ids):
                for rank, i in enumerate(ranking):
                    ranked[i] = ranked.get(i, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        best = list(diversify(ranked, self.index.chunks, self.diversity).items())[:k]
        dense.update(self._cosines(qvec, [i for i, _ in best if i not in dense]))
        return [Hit(self.index.chunks[i], score, dense[i]) for i, score in best]
