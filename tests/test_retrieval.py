"""Retrieval modes on the real FAQ index with the real embedder."""
from __future__ import annotations

import numpy as np
import pytest

from chatbot.retrieval import MODES, Retriever
from chatbot.stores import FaissStore

pytestmark = pytest.mark.slow

QUESTION = "Why does my back still hurt after fusion surgery?"


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_finds_the_matching_faq_entry(embedder, store_bot, settings, mode):
    """In each vector store (FAISS files, PostgreSQL + pgvector)."""
    retriever = Retriever.from_settings(store_bot.index, settings.replace(retrieval_mode=mode),
                                        embedder)
    assert retriever.mode == mode
    hits = retriever.search("What causes a failed fusion?", 4)
    assert hits[0].chunk.title == "What causes a failed fusion?"
    assert len(hits) == 4 and len({h.chunk.id for h in hits}) == 4
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_hits_carry_the_dense_cosine_whatever_the_mode(embedder, faq_index, mode):
    hits = Retriever(faq_index, embedder, mode=mode).search(QUESTION, 3)
    q = embedder.embed([QUESTION])[0]
    for h in hits:
        own = embedder.embed([h.chunk.embed_text])[0]
        assert h.dense == pytest.approx(float(own @ q), abs=1e-4)


def test_dense_mode_is_the_faiss_ranking(embedder, faq_index):
    hits = Retriever(faq_index, embedder, mode="dense", diversity=0).search(QUESTION, 5)
    _, ids = faq_index.search(embedder.embed([QUESTION]), 5)
    assert [h.chunk.id for h in hits] == [faq_index.chunks[i].id for i in ids[0]]
    assert all(h.score == h.dense for h in hits)


def test_bm25_finds_a_rare_exact_word(embedder, faq_index):
    hits = Retriever(faq_index, embedder, mode="bm25").search("FBSS", 3)
    assert hits and "FBSS" in hits[0].chunk.text
    assert hits[0].score == 1.0  # scaled to the best match
    # no word matches
    assert Retriever(faq_index, embedder, mode="bm25").search("zebra xylophone", 3) == []


def test_blend_adds_the_scaled_bm25_and_the_title_similarity_to_the_cosine(embedder, faq_index):
    retriever = Retriever(faq_index, embedder, lexical_weight=0.2, mode="blend", title_weight=0.3,
                          diversity=0)
    lexical = retriever.lexical(QUESTION)
    assert lexical.max() == pytest.approx(1.0)
    title = float(embedder.embed([faq_index.chunks[0].doc_title])[0]
                  @ embedder.embed([QUESTION])[0])
    for h in retriever.search(QUESTION, 4):
        i = faq_index.chunks.index(h.chunk)
        assert h.score == pytest.approx(h.dense + 0.2 * lexical[i] + 0.3 * title, abs=1e-5)


def test_diversity_keeps_a_one_file_ranking_as_it_is(embedder, faq_index):
    plain = Retriever(faq_index, embedder, diversity=0).search(QUESTION, 6)
    diverse = Retriever(faq_index, embedder, diversity=0.5).search(QUESTION, 6)
    assert [h.chunk.id for h in diverse] == [h.chunk.id for h in plain]
    assert [h.score for h in diverse][1:] < [h.score for h in plain][1:]  # scored down, same order


def test_diversity_brings_in_other_documents(embedder, tmp_path):
    from chatbot import index as index_mod
    from chatbot.config import load_settings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "walking.md").write_text("\n\n".join(
        f"# Walking, week {w}\n\nWalk {w * 10} minutes a day after back surgery, twice a day."
        for w in range(1, 7)), encoding="utf-8")
    (corpus / "pool.md").write_text("# Swimming\n\nAfter back surgery, swim once the wound has healed.",
                                    encoding="utf-8")
    index = index_mod.ensure(load_settings(corpus_dir=corpus, index_dir=tmp_path / "index"),
                             embedder)
    question = "How much should I walk each day after back surgery?"
    plain = [h.chunk.source for h in Retriever(index, embedder, diversity=0).search(question, 3)]
    diverse = [h.chunk.source
               for h in Retriever(index, embedder, diversity=0.5).search(question, 3)]
    assert plain == ["walking.md"] * 3
    assert diverse[0] == "walking.md" and "pool.md" in diverse


def test_rrf_scores_are_reciprocal_ranks(embedder, faq_index):
    hits = Retriever(faq_index, embedder, mode="rrf", rrf_k=60).search(QUESTION, 4)
    assert all(0 < h.score <= 2 / 61 for h in hits)


def test_k_larger_than_the_corpus_and_unknown_mode(embedder, faq_index):
    hits = Retriever(faq_index, embedder, mode="dense").search(QUESTION, 1000)
    assert len(hits) == len(faq_index.chunks)
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Retriever(faq_index, embedder, mode="magic")


def test_retrieval_works_on_an_hnsw_index(embedder, faq_index, settings):
    from chatbot import index as index_mod

    hnsw = index_mod.make_faiss(faq_index.vectors(list(range(len(faq_index.chunks)))),
                                settings.replace(hnsw_min_chunks=1))
    approx = index_mod.Index(FaissStore(hnsw, [c.source for c in faq_index.chunks]),
                             faq_index.chunks, faq_index.manifest,
                             title_vectors=faq_index.title_vectors)
    for mode in MODES:
        got = [h.chunk.id for h in Retriever(approx, embedder, mode=mode).search(QUESTION, 3)]
        want = [h.chunk.id for h in Retriever(faq_index, embedder, mode=mode).search(QUESTION, 3)]
        assert got == want
    assert np.isclose(Retriever(approx, embedder).search(QUESTION, 1)[0].dense,
                      Retriever(faq_index, embedder).search(QUESTION, 1)[0].dense)
