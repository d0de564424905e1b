"""Vector stores: FAISS files and PostgreSQL + pgvector give the same answers; the database one
ingests by document, keeps the owner rule, notices a changed collection, and serves several
processes. Against CHATBOT_DATABASE_URL, or a server the session starts (tests/conftest.py)."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder

from chatbot import index as index_mod
from chatbot.__main__ import main as cli
from chatbot.config import load_settings
from chatbot.retrieval import MODES, Retriever
from chatbot.stores import DatabaseError, connect

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
DEV = ROOT / "tests" / "data" / "dev.jsonl"
CARE = "# Wound care\n\nKeep the wound dry for five days.\n\n# Showers\n\nShower after day five.\n"


@pytest.mark.slow
def test_pgvector_answers_the_dev_set_as_faiss_does(pgvector_bot, extractive_bot):
    """The FAISS bot of the other tests is the reference: same hits, scores, answers."""
    rows = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    assert pgvector_bot.index.store.stats()["kind"] == "pgvector"
    for r in rows:
        turns = r.get("turns") or [r["question"]]
        got = pgvector_bot.answer(turns[-1], turns[:-1])
        want = extractive_bot.answer(turns[-1], turns[:-1])
        assert [h.chunk.id for h in got.hits] == [h.chunk.id for h in want.hits], turns
        assert np.allclose([h.dense for h in got.hits], [h.dense for h in want.hits], atol=1e-5)
        assert (got.text, got.coverage) == (want.text, want.coverage), turns
    queries = [(r.get("turns") or [r["question"]])[-1] for r in rows]
    vectors = extractive_bot.embedder.embed(queries)
    for mode in MODES:
        retrievers = [Retriever.from_settings(bot.index, bot.settings.replace(retrieval_mode=mode),
                                              bot.embedder) for bot in (pgvector_bot, extractive_bot)]
        for query, qvec in zip(queries, vectors):
            got, want = (r.search(query, 8, qvec[None, :]) for r in retrievers)
            assert [h.chunk.id for h in got] == [h.chunk.id for h in want], (mode, query)


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(FAQ, folder / FAQ.name)
    (folder / "care.md").write_text(CARE, encoding="utf-8")
    return folder


@pytest.fixture
def pg(corpus, tmp_path, database_url):
    return load_settings(corpus_dir=corpus, index_dir=tmp_path / "index", generator="extractive",
                         vector_store="pgvector", database_url=database_url)


def _synced(caplog) -> dict:
    """What the last save changed in the database, as logged."""
    line = [m for m in caplog.messages if m.startswith("Database collection")][-1]
    return json.loads(line.split(": ", 1)[1].replace("'", '"'))


def test_pgvector_ingest_is_incremental_by_document(pg, corpus, caplog):
    fake = FakeEmbedder()
    with caplog.at_level(logging.INFO, logger="chatbot.index"):
        first = index_mod.ensure(pg, fake)
        assert first.store.stats() == {"kind": "pgvector", "index_type": "HNSW (pgvector)",
                                       "vectors": len(first.chunks), "documents": 2,
                                       "collection": index_mod.collection_name(pg.index_dir)}
        assert first.store.sources() == ["care.md", FAQ.name]
        assert _synced(caplog)["documents_added"] == 2

        (corpus / "care.md").write_text(CARE.replace("five", "seven"), encoding="utf-8")
        second = index_mod.ensure(pg, fake)
        care = [c for c in second.chunks if c.source == "care.md"]
        assert _synced(caplog) == {"documents_removed": 1, "documents_added": 1,
                                   "chunks_added": len(care)}
        (corpus / "care.md").unlink()
        third = index_mod.ensure(pg, fake)
        assert _synced(caplog) == {"documents_removed": 1, "documents_added": 0, "chunks_added": 0}
    assert third.store.sources() == [FAQ.name] == third.sources
    assert third.store.stats()["vectors"] == len(third.chunks)
    stored = third.vectors(list(range(len(third.chunks))))
    assert np.allclose(stored, fake.embed([c.embed_text for c in third.chunks]), atol=1e-6)


def test_both_stores_search_by_source(pg, tmp_path):
    fake = FakeEmbedder()
    query = fake.embed(["How long should the wound stay dry?"])
    for settings in (pg, pg.replace(vector_store="faiss", index_dir=tmp_path / "faiss")):
        index = index_mod.ensure(settings, fake)
        _, everywhere = index.store.search(query, 5)
        _, care_only = index.store.search(query, 5, sources=["care.md"])
        found = [index.chunks[i].source for i in care_only[0] if i >= 0]
        assert found and set(found) == {"care.md"}, settings.vector_store
        assert index.chunks[everywhere[0][0]].source == "care.md"


def test_a_collection_of_another_corpus_is_never_overwritten(pg, corpus, tmp_path):
    fake = FakeEmbedder()
    index_mod.ensure(pg, fake)
    shutil.rmtree(pg.index_dir)  # the folder's own records gone: the database's must hold
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("Another corpus entirely.", encoding="utf-8")
    intruder = pg.replace(corpus_dir=other)
    with pytest.raises(index_mod.IndexError_, match=f"holds the index of {corpus.resolve()}"):
        index_mod.ensure(intruder, fake)
    conn = connect(pg.database_url)
    owner = conn.execute("SELECT corpus_dir FROM chatbot_collections WHERE name = %s",
                         [index_mod.collection_name(pg.index_dir)]).fetchone()[0]
    assert owner == str(corpus.resolve())
    replaced = index_mod.rebuild(intruder, fake, force=True)
    assert replaced.store.sources() == ["a.txt"]


def test_a_changed_collection_is_noticed_and_rebuilt_from_the_cache(pg):
    fake = FakeEmbedder()
    built = index_mod.ensure(pg, fake)
    conn = connect(pg.database_url)
    conn.execute("UPDATE chatbot_collections SET generation = 'elsewhere' WHERE name = %s",
                 [index_mod.collection_name(pg.index_dir)])
    with pytest.raises(index_mod.IndexError_, match="not the one"):
        index_mod.load(pg.index_dir, pg.database_url)
    calls = fake.calls
    again = index_mod.ensure(pg, fake)
    assert fake.calls == calls  # nothing embedded: the cache holds every vector
    assert again.manifest["pg_generation"] == built.manifest["pg_generation"]


def test_another_process_serves_the_same_collection(pg):
    fake = FakeEmbedder()
    index = index_mod.ensure(pg, fake)
    question = "How long should the wound stay dry?"
    _, here = index.search(fake.embed([question]), 3)
    code = (f"import sys; sys.path.insert(0, 'tests')\n"
            "from fakes import FakeEmbedder\n"
            "from chatbot import index\n"
            f"i = index.load(__import__('pathlib').Path({str(pg.index_dir)!r}), sys.argv[1])\n"
            f"print(i.search(FakeEmbedder().embed([{question!r}]), 3)[1][0].tolist())\n")
    run = subprocess.run([sys.executable, "-c", code, pg.database_url], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == str([int(i) for i in here[0]])


def test_no_database_is_one_clear_line(corpus, tmp_path, monkeypatch, caplog):
    url = f"postgresql://postgres:@/postgres?host={tmp_path / 'nowhere'}"
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "i", vector_store="pgvector",
                             database_url=url)
    with pytest.raises(DatabaseError, match="cannot connect to the database"):
        index_mod.ensure(settings, FakeEmbedder())
    monkeypatch.setenv("CHATBOT_VECTOR_STORE", "pgvector")
    monkeypatch.setenv("CHATBOT_DATABASE_URL", url)
    with caplog.at_level(logging.ERROR):
        code = cli(["ingest", "--corpus", str(corpus), "--index", str(tmp_path / "j")])
    assert code == 2
    assert "CHATBOT_DATABASE_URL" in caplog.messages[-1] and "\n" not in caplog.messages[-1]
