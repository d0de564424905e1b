"""Retrieval modes on the real FAQ index with the real embedder."""
from __future__ import annotations

import numpy as np
import pytest

from chatbot import models
from chatbot.retrieval import MODES, Retriever

pytestmark = pytest.mark.slow

QUESTION = "Why does my back still hurt after fusion surgery?"


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_finds_the_matching_faq_entry(faq_index, settings, mode):
    retriever = Retriever.from_settings(faq_index, settings.replace(retrieval_mode=mode))
    assert retriever.mode == mode
    hits = retriever.search("What causes a failed fusion?", 4)
    assert hits[0].chunk.title == "What causes a failed fusion?"
    assert len(hits) == 4 and len({h.chunk.id for h in hits}) == 4
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_hits_carry_the_dense_cosine_whatever_the_mode(faq_index, mode):
    hits = Retriever(faq_index, mode=mode).search(QUESTION, 3)
    q = models.embed([QUESTION])[0]
    for h in hits:
        assert h.dense == pytest.approx(float(models.embed([h.chunk.embed_text])[0] @ q), abs=1e-4)


def test_dense_mode_is_the_faiss_ranking(faq_index):
    hits = Retriever(faq_index, mode="dense").search(QUESTION, 5)
    _, ids = faq_index.search(models.embed([QUESTION]), 5)
    assert [h.chunk.id for h in hits] == [faq_index.chunks[i].id for i in ids[0]]
    assert all(h.score == h.dense for h in hits)


def test_bm25_finds_a_rare_exact_word(faq_index):
    hits = Retriever(faq_index, mode="bm25").search("FBSS", 3)
    assert hits and "FBSS" in hits[0].chunk.text
    assert hits[0].score == 1.0  # scaled to the best match
    assert Retriever(faq_index, mode="bm25").search("zebra xylophone", 3) == []  # no word matches


def test_blend_adds_the_scaled_bm25_to_the_cosine(faq_index):
    retriever = Retriever(faq_index, lexical_weight=0.2, mode="blend")
    lexical = retriever.lexical(QUESTION)
    assert lexical.max() == pytest.approx(1.0)
    for h in retriever.search(QUESTION, 4):
        i = faq_index.chunks.index(h.chunk)
        assert h.score == pytest.approx(h.dense + 0.2 * lexical[i])


def test_rrf_scores_are_reciprocal_ranks(faq_index):
    hits = Retriever(faq_index, mode="rrf", rrf_k=60).search(QUESTION, 4)
    assert all(0 < h.score <= 2 / 61 for h in hits)


def test_k_larger_than_the_corpus_and_unknown_mode(faq_index):
    hits = Retriever(faq_index, mode="dense").search(QUESTION, 1000)
    assert len(hits) == len(faq_index.chunks)
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Retriever(faq_index, mode="magic")


def test_retrieval_works_on_an_hnsw_index(faq_index, settings):
    from chatbot import index as index_mod

    hnsw = index_mod.make_faiss(faq_index.vectors(list(range(len(faq_index.chunks)))),
                                settings.replace(hnsw_min_chunks=1))
    approx = index_mod.Index(hnsw, faq_index.chunks, faq_index.manifest)
    for mode in MODES:
        got = [h.chunk.id for h in Retriever(approx, mode=mode).search(QUESTION, 3)]
        want = [h.chunk.id for h in Retriever(faq_index, mode=mode).search(QUESTION, 3)]
        assert got == want
    assert np.isclose(Retriever(approx).search(QUESTION, 1)[0].dense,
                      Retriever(faq_index).search(QUESTION, 1)[0].dense)
