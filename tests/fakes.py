"""Stand-ins for the packaged models in fast tests that prove a seam, not the models' quality."""
from __future__ import annotations

import hashlib

import numpy as np

from chatbot.text import terms


class FakeEmbedder:
    """An `Embedder` that hashes each text's word stems into a vector: texts sharing words are
    close, others orthogonal. Deterministic across processes (sha256, not Python's salted hash);
    a text with no content word maps to a dimension of its own."""

    id = "fake-hashing-embedder==1"

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.calls = 0

    def embed(self, texts, progress=False) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype="float32")
        for row, text in enumerate(texts):
            for stem in terms(text):
                digest = int(hashlib.sha256(stem.encode()).hexdigest(), 16)
                out[row, 1 + digest % (self.dim - 1)] += 1
            if not out[row].any():
                out[row, 0] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class ScriptedGenerator:
    """A `Generator` that drafts the same text whatever it is asked: the checks' verdict on a
    known draft, without a model."""

    name = "local"  # judged as a model's draft, not as quotes

    def __init__(self, draft: str):
        self.draft = draft

    def stream(self, question, facts):
        yield self.draft

    def rewrite(self, question):
        return None
