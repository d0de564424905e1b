"""The index on disk: incremental ingest, crash safety, corruption, staleness, HNSW. Real embedder."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fresh import last_line

from chatbot import index as index_mod
from chatbot.__main__ import main as cli
from chatbot.config import load_settings
from chatbot.documents import LoadError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(FAQ, folder / FAQ.name)
    (folder / "care.md").write_text("# Wound care\n\nKeep the incision clean and dry for five days.\n\n"
                                    "# Driving\n\nDo not drive while you take opioid pain medicine.",
                                    encoding="utf-8")
    (folder / "diet.html").write_text(
        "<html><head><title>Diet</title><script>var x = 1;</script></head><body>"
        "<h1>Diet after surgery</h1><p>Eat protein and calcium to help the bone heal.</p></body></html>",
        encoding="utf-8")
    return folder


@pytest.fixture
def settings(corpus, tmp_path):
    return load_settings(corpus_dir=corpus, index_dir=tmp_path / "index")


class Counting:
    """The real embedder, counting the texts of each call."""

    def __init__(self, real):
        self.real, self.id, self.dim, self.calls = real, real.id, real.dim, []

    def embed(self, texts, progress=False):
        self.calls.append(len(texts))
        return self.real.embed(texts, progress)


@pytest.fixture
def emb(embedder) -> Counting:
    return Counting(embedder)


@pytest.fixture
def embedded(emb) -> list[int]:
    """Number of texts per call to the embedder, to see what an ingest really embedded (chunks and
    titles, nothing else: instructions are flagged when retrieved, see test_instructions.py)."""
    return emb.calls


def _sources(index) -> set[str]:
    return {c.source for c in index.chunks}


def test_incremental_ingest_embeds_only_what_changed(emb, settings, corpus, embedded):
    first = index_mod.ensure(settings, emb)
    assert _sources(first) == {FAQ.name, "care.md", "diet.html"}
    # every chunk, plus one title per file
    assert sum(embedded) - 3 == first.manifest["embedded_chunks"] == len(first.chunks)

    embedded.clear()
    # fresh: loaded, nothing embedded
    assert index_mod.ensure(settings, emb).manifest == first.manifest
    assert embedded == []

    (corpus / "care.md").write_text("# Wound care\n\nKeep the incision dry for a week.\n\n"
                                    "# Bathing\n\nShower after three days; no baths for a month.",
                                    encoding="utf-8")
    second = index_mod.ensure(settings, emb)
    care = [c for c in second.chunks if c.source == "care.md"]
    assert sum(embedded) - 1 == second.manifest["embedded_chunks"] == len(care) == 2
    assert any("no baths" in c.text for c in care)
    assert len(second.chunks) == second.store.stats()["vectors"]

    embedded.clear()
    (corpus / "diet.html").unlink()
    third = index_mod.ensure(settings, emb)
    assert embedded == [] and _sources(third) == {FAQ.name, "care.md"}
    assert third.store.stats()["vectors"] == len(third.chunks) == len(second.chunks) - 1
    # the removed file's cache entry is gone too
    assert len(list((settings.index_dir / index_mod.CACHE_DIR).glob("*.npz"))) == 2


def test_vectors_match_the_chunks_after_an_update(emb, settings, corpus):
    index_mod.ensure(settings, emb)
    (corpus / "care.md").write_text("# Driving\n\nWait two weeks before driving.", encoding="utf-8")
    index = index_mod.ensure(settings, emb)
    stored = index.vectors(list(range(len(index.chunks))))
    fresh = emb.real.embed([c.embed_text for c in index.chunks])
    assert np.allclose(stored, fresh, atol=1e-4)
    titles = list(dict.fromkeys(c.doc_title for c in index.chunks))  # one per file, in chunk order
    assert "Driving" in titles and len(titles) == len(index.sources)
    assert np.allclose(index_mod.load(settings.index_dir).title_vectors, emb.real.embed(titles),
                       atol=1e-4)


def test_killed_ingest_resumes_without_redoing_finished_files(emb, settings, monkeypatch, embedded):
    # Corpus order: care.md (2 chunks + title), diet.html (1 + title), the FAQ. Batches of 4 texts
    # cross file boundaries: the first finishes care.md and leaves a partial entry for diet.html.
    settings = settings.replace(embed_batch_chunks=4)
    real = emb.embed  # the counting one

    def dies_on_second_batch(texts, *args, **kwargs):
        if len(embedded) == 1:
            raise KeyboardInterrupt
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(emb, "embed", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        index_mod.ensure(settings, emb)
    assert embedded == [4]
    assert not (settings.index_dir / index_mod.MANIFEST_FILE).exists()
    cache = settings.index_dir / index_mod.CACHE_DIR
    assert len(list(cache.glob("*.npz"))) == 1 and len(list(cache.glob("*.part.npy"))) == 1

    monkeypatch.setattr(emb, "embed", real)
    embedded.clear()
    index = index_mod.ensure(settings, emb)
    assert sum(embedded) == len(index.chunks) + 3 - 4  # chunks and titles, less the first batch
    assert index.manifest["embedded_chunks"] == len(index.chunks) - 3  # care.md's 2, diet's first
    assert not list(cache.glob("*.part.npy"))
    stored = index.vectors(list(range(len(index.chunks))))
    assert np.allclose(stored, emb.real.embed([c.embed_text for c in index.chunks]), atol=1e-4)


def test_crash_while_swapping_leaves_the_previous_index_loadable(emb, settings,
                                                                 corpus, monkeypatch):
    before = index_mod.ensure(settings, emb)
    (corpus / "extra.txt").write_text("Physical therapy starts six weeks after surgery.", encoding="utf-8")
    real_replace = os.replace

    def crash_on_manifest(src, dst, *args, **kwargs):
        if Path(dst).name == index_mod.MANIFEST_FILE:
            raise OSError("disk full")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        index_mod.ensure(settings, emb)
    monkeypatch.setattr(os, "replace", real_replace)

    survivor = index_mod.load(settings.index_dir)
    assert survivor.manifest == before.manifest
    assert survivor.store.stats()["vectors"] == len(before.chunks)
    assert "extra.txt" in index_mod.staleness(survivor, settings, emb)
    after = index_mod.ensure(settings, emb)
    assert "extra.txt" in _sources(after)
    assert [p.name for p in settings.index_dir.glob("*.faiss")] == [after.manifest["faiss_file"]]
    assert not list(settings.index_dir.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("part", ["faiss_file", "titles_file"])
def test_corrupted_index_is_detected_and_rebuilt(emb, settings, embedded, caplog, part):
    built = index_mod.ensure(settings, emb)
    path = settings.index_dir / built.manifest[part]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(index_mod.IndexError_, match="corrupted: its checksum does not match"):
        index_mod.load(settings.index_dir)

    embedded.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = index_mod.ensure(settings, emb)
    assert any("corrupted" in r.getMessage() for r in caplog.records)
    assert embedded == []  # rebuilt from the embedding cache
    assert len(rebuilt.chunks) == len(built.chunks)
    assert index_mod.load(settings.index_dir).store.stats()["vectors"] == len(built.chunks)


def test_broken_manifest_and_missing_faiss_file_are_clear_errors(emb, settings):
    built = index_mod.ensure(settings, emb)
    (settings.index_dir / built.manifest["faiss_file"]).unlink()
    with pytest.raises(index_mod.IndexError_, match="is missing"):
        index_mod.load(settings.index_dir)
    (settings.index_dir / index_mod.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(index_mod.IndexError_, match="unreadable"):
        index_mod.load(settings.index_dir)
    assert index_mod.ensure(settings, emb).store.stats()["vectors"] == len(built.chunks)


def test_staleness_on_model_or_chunking_change(emb, settings, monkeypatch, embedded):
    index = index_mod.ensure(settings, emb)
    assert index_mod.staleness(index, settings, emb) is None
    assert "chunking changed" in index_mod.staleness(index, settings.replace(chunk_chars=300), emb)
    monkeypatch.setattr(emb, "id", "another-model==1.0")
    assert "embedder changed" in index_mod.staleness(index, settings, emb)
    embedded.clear()
    rebuilt = index_mod.ensure(settings, emb)
    assert rebuilt.manifest["embedder"] == "another-model==1.0"
    assert sum(embedded) == len(rebuilt.chunks) + 3  # new model: every chunk and title embedded again


def test_bad_files_are_skipped_and_the_rest_indexed(emb, settings, corpus):
    (corpus / "empty.txt").write_text("")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    index = index_mod.ensure(settings, emb)
    assert _sources(index) == {FAQ.name, "care.md", "diet.html"}
    assert sorted(p.split(":")[0] for p in index.manifest["skipped"]) == ["broken.pdf", "empty.txt"]
    # unchanged bad files do not force rebuilds
    assert index_mod.staleness(index, settings, emb) is None


def test_no_readable_documents_is_an_error(emb, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "empty.txt").write_text("")
    with pytest.raises(LoadError, match="no readable documents.*empty.txt"):
        index_mod.build(load_settings(corpus_dir=tmp_path / "c", index_dir=tmp_path / "i"), emb)
    assert not (tmp_path / "i").exists()  # an outside trial found owner.json and cache/ there


def test_hnsw_above_the_threshold_matches_exact_search(emb, settings):
    exact = index_mod.ensure(settings, emb)
    hnsw_settings = settings.replace(index_dir=settings.index_dir.parent / "hnsw", hnsw_min_chunks=1)
    approx = index_mod.ensure(hnsw_settings, emb)
    assert approx.manifest["index_type"] == "IndexHNSWFlat"
    reloaded = index_mod.load(hnsw_settings.index_dir)
    q = emb.real.embed(["Why does my back still hurt after fusion surgery?"])
    assert list(reloaded.search(q, 3)[1][0]) == list(exact.search(q, 3)[1][0])


def test_cli_ingest(settings, caplog):
    """It says which files it embeds and which it cannot read (an outside trial's .docx went
    unmentioned)."""
    (settings.corpus_dir / "notes.docx").write_bytes(b"PK\x03\x04")
    with caplog.at_level(logging.INFO):
        assert cli(["ingest", "--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]) == 0
    index = index_mod.load(settings.index_dir)
    assert index.manifest["chunk_count"] == len(index.chunks) > 0
    assert "new or changed files: care.md, diet.html, failed-fusion-faq.txt" in caplog.text
    assert "Not read, of a kind it cannot read (.htm, .html, .markdown, .md, .pdf, .txt only): " \
        "notes.docx" in caplog.text


def test_bm25_is_saved_and_loaded_instead_of_rebuilt(emb, settings, monkeypatch, caplog):
    built = index_mod.ensure(settings, emb)
    loaded = index_mod.load(settings.index_dir)
    monkeypatch.setattr(index_mod, "lexical_index", lambda chunks: pytest.fail("BM25 rebuilt"))
    query = ["fusion", "pain"]
    assert np.allclose(loaded.bm25.get_scores(query), built.bm25.get_scores(query))
    monkeypatch.undo()

    folder = settings.index_dir / built.manifest["bm25_dir"]
    (folder / "params.index.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        fallback = index_mod.load(settings.index_dir).bm25  # tampered: rebuilt from the chunks
    assert any("BM25 index" in r.getMessage() for r in caplog.records)
    assert np.allclose(fallback.get_scores(query), built.bm25.get_scores(query))


# -- ownership: an index folder belongs to one corpus ---------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def other(tmp_path) -> Path:
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "a.txt").write_text("Another corpus entirely: notes on bread baking.")
    return folder


def test_a_damaged_manifest_never_lets_another_corpus_touch_the_index(emb, settings, corpus, other,
                                                                       embedded):
    index_mod.ensure(settings, emb)
    manifest = settings.index_dir / index_mod.MANIFEST_FILE
    manifest.write_bytes(manifest.read_bytes()[:100])  # issue #13: a truncated manifest
    intruder = settings.replace(corpus_dir=other)
    before = _snapshot(settings.index_dir)
    for attempt in (index_mod.ensure, index_mod.rebuild, index_mod.build):
        expected = f"holds the index of {corpus.resolve()}, not of {other.resolve()}.*ingest --force"
        with pytest.raises(index_mod.IndexError_, match=expected):
            attempt(intruder, emb)
    # The owner file damaged too: its copy in the cache still tells.
    (settings.index_dir / index_mod.OWNER_FILE).write_text("{")
    before = _snapshot(settings.index_dir)
    with pytest.raises(index_mod.IndexError_, match="holds the index of"):
        index_mod.ensure(intruder, emb)
    assert _snapshot(settings.index_dir) == before  # nothing written, nothing pruned

    embedded.clear()
    # its own corpus: rebuilt from the cache, records repaired
    rebuilt = index_mod.ensure(settings, emb)
    assert embedded == [] and _sources(rebuilt) == {FAQ.name, "care.md", "diet.html"}
    assert index_mod.owner(settings.index_dir) == str(corpus.resolve())


def test_the_repositorys_index_folder_with_its_readme_is_a_new_index(emb, settings):
    """A fresh clone has index/README.md only: the README's first command must just build."""
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).parents[1] / "index" / "README.md", settings.index_dir)
    assert index_mod.ensure(settings, emb).store.stats()["vectors"] > 0
    assert (settings.index_dir / "README.md").exists()


def test_a_folder_of_unknown_ownership_is_replaced_only_with_force(emb, settings, caplog):
    index_mod.ensure(settings, emb)
    for record in (index_mod.OWNER_FILE, f"{index_mod.CACHE_DIR}/{index_mod.OWNER_FILE}"):
        (settings.index_dir / record).unlink()
    (settings.index_dir / index_mod.MANIFEST_FILE).write_text("{not json")
    before = _snapshot(settings.index_dir)
    with pytest.raises(index_mod.IndexError_, match="not empty but has no readable record"):
        index_mod.ensure(settings, emb)
    args = ["ingest", "--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]
    with caplog.at_level(logging.ERROR):
        assert cli(args) == 2
    assert "ingest --force" in caplog.records[-1].getMessage()
    assert _snapshot(settings.index_dir) == before
    assert cli([*args, "--force"]) == 0
    assert index_mod.load(settings.index_dir).store.stats()["vectors"] > 0
    assert index_mod.owner(settings.index_dir) == str(settings.corpus_dir.resolve())


def test_force_replaces_another_corpus_index_and_prunes_its_cache(emb, settings, other):
    index_mod.ensure(settings, emb)
    index_mod.rebuild(settings.replace(corpus_dir=other), emb, force=True)
    index = index_mod.load(settings.index_dir)
    assert _sources(index) == {"a.txt"} and index.manifest["corpus_dir"] == str(other.resolve())
    assert len(list((settings.index_dir / index_mod.CACHE_DIR).glob("*.npz"))) == 1
    with pytest.raises(index_mod.IndexError_, match="holds the index of"):
        index_mod.ensure(settings, emb)


def test_an_index_from_before_owner_records_is_proven_by_its_manifest(emb, settings, corpus):
    built = index_mod.ensure(settings, emb)
    for record in (index_mod.OWNER_FILE, f"{index_mod.CACHE_DIR}/{index_mod.OWNER_FILE}"):
        (settings.index_dir / record).unlink()
    # fresh: loaded, nothing written
    assert index_mod.ensure(settings, emb).manifest == built.manifest
    assert not (settings.index_dir / index_mod.OWNER_FILE).exists()
    (corpus / "extra.txt").write_text("Physical therapy starts six weeks after surgery.")
    assert "extra.txt" in _sources(index_mod.ensure(settings, emb))
    assert index_mod.owner(settings.index_dir) == str(corpus.resolve())
    assert (settings.index_dir / index_mod.CACHE_DIR / index_mod.OWNER_FILE).exists()


# -- failures while saving ------------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_the_old_index_keeps_answering(emb, settings, corpus,
                                                                   monkeypatch,
                                                                    caplog, capsys):
    before = index_mod.ensure(settings, emb)
    (corpus / "extra.txt").write_text("Physical therapy starts six weeks after surgery.")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(index_mod, "_save_bm25", full)  # after the new FAISS and title files
    with caplog.at_level(logging.INFO):
        assert cli(["ingest", "--corpus", str(corpus), "--index", str(settings.index_dir)]) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert error == (f"cannot write the index in {settings.index_dir} (No space left on device): "
                     "free some disk space there, or pass --index a folder on another disk; the "
                     "previous index is unchanged")
    assert "Traceback" not in capsys.readouterr().err
    assert index_mod.load(settings.index_dir).manifest == before.manifest

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        served = index_mod.ensure(settings, emb)  # what ask, chat and serve do
    assert served.manifest == before.manifest and "extra.txt" in served.stale
    assert "Answering from the index built" in caplog.text
    monkeypatch.undo()
    assert "extra.txt" in _sources(index_mod.ensure(settings, emb))
    assert len(list(settings.index_dir.glob("index-*.faiss"))) == 1  # the orphan was cleaned up


# -- big inputs -----------------------------------------------------------------------------------

def _numbered_facts(count: int) -> str:
    """count short sentences; with chunk_chars=80, one chunk per sentence (each shares one)."""
    return " ".join(f"Fact {i} says that item {i} weighs {i * 7 % 100} grams."
                    for i in range(count))


def test_a_killed_ingest_of_one_huge_file_resumes_from_its_last_batch(emb, settings, corpus,
                                                                        monkeypatch,
                                                                        embedded):
    for path in corpus.iterdir():
        path.unlink()
    (corpus / "huge.txt").write_text(_numbered_facts(2001), encoding="utf-8")
    settings = settings.replace(chunk_chars=80, embed_batch_chunks=200)
    real = emb.embed

    def killed_after_five_batches(texts, *args, **kwargs):
        if len(embedded) == 5:
            raise KeyboardInterrupt
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(emb, "embed", killed_after_five_batches)
    with pytest.raises(KeyboardInterrupt):
        index_mod.rebuild(settings, emb)
    assert embedded == [200] * 5
    assert len(list((settings.index_dir / index_mod.CACHE_DIR).glob("*.part.npy"))) == 5

    monkeypatch.setattr(emb, "embed", real)
    embedded.clear()
    index = index_mod.rebuild(settings, emb)
    assert len(index.chunks) == 2001
    assert sum(embedded) == 2001 + 1 - 1000  # only the rest, and the title
    assert index.manifest["embedded_chunks"] == 1001
    sample = [0, 199, 200, 999, 1000, 1001, 2000]  # either side of the batch edges and the resume
    fresh = emb.real.embed([index.chunks[i].embed_text for i in sample])
    assert np.allclose(index.vectors(sample), fresh, atol=1e-4)
    assert not list((settings.index_dir / index_mod.CACHE_DIR).glob("*.part.npy"))


def test_ask_leaves_a_big_update_to_ingest_and_serves_the_last_index(emb, settings, corpus,
                                                                     embedded,
                                                                     caplog):
    # no index: always built
    first = index_mod.ensure(settings.replace(auto_update_max_chunks=0), emb)
    (corpus / "facts.txt").write_text(_numbered_facts(40), encoding="utf-8")
    embedded.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        served = index_mod.ensure(settings.replace(auto_update_max_chunks=1), emb)
    assert embedded == [] and served.manifest == first.manifest
    assert served.stale == "corpus added: facts.txt"
    (warning,) = caplog.messages
    assert warning.startswith("The index is out of date (corpus added: facts.txt): 2 chunks to "
                              "embed, about 1 s here, more than auto_update_max_chunks (1).")
    assert f"`python -m chatbot ingest --corpus {corpus} --index {settings.index_dir}`" in warning

    updated = index_mod.ensure(settings, emb)  # within the limit: updated as before
    assert "facts.txt" in _sources(updated) and updated.stale is None


def test_a_killed_rebuild_leaves_the_last_good_index_answering(emb, settings, corpus):
    """SIGKILL in the middle of a real `ingest` (a subprocess), then the old index answers."""
    from chatbot.pipeline import Chatbot

    before = index_mod.ensure(settings, emb)
    (corpus / "facts.txt").write_text(_numbered_facts(4000), encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")},
           "PYTHONPATH": str(ROOT), "CHATBOT_EMBED_BATCH_CHUNKS": "20"}
    proc = subprocess.Popen([sys.executable, "-m", "chatbot", "ingest", "--corpus", str(corpus),
                             "--index", str(settings.index_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = settings.index_dir / index_mod.CACHE_DIR
    try:
        deadline = time.monotonic() + 300
        while (not list(cache.glob("*.part.npy")) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-way, not finished
    assert list(cache.glob("*.part.npy"))

    survivor = index_mod.load(settings.index_dir)
    assert survivor.manifest == before.manifest
    bot = Chatbot(settings.replace(generator="extractive"), index=survivor, embedder=emb)
    answer = bot.answer("Can your spine curve after fusion?")
    assert not answer.refused and answer.citations


def test_document_frequencies_are_saved_with_the_index_not_counted_at_start(settings):
    from fakes import FakeEmbedder

    built = index_mod.ensure(settings, FakeEmbedder())
    counted = index_mod.document_frequency(built.chunks)
    assert counted["incis"] == 1 and counted["surgeri"] == 2  # care.md; the FAQ and diet.html
    reloaded = index_mod.load(settings.index_dir)
    assert reloaded.manifest["document_frequency"] == dict(counted)
    reloaded.manifest["document_frequency"] = {"only": 3}  # read back, not counted again
    assert reloaded.document_frequency == {"only": 3}
    # so are the CamelCase names a question's missing literals are checked against
    assert "ProDisc" in reloaded.manifest["names"] and "ProDisc" in reloaded.names
    reloaded.manifest["names"] = ["OnlyThis"]
    del reloaded.__dict__["names"]
    assert reloaded.names == {"OnlyThis"}


def test_files_are_read_in_worker_processes_after_the_model_showed_its_progress_bar(tmp_path):
    """#12: loading the embedder draws a progress bar, which starts tqdm's monitor threads; ingest
    still reads in worker processes (it read in one, 36.6 s instead of 15.8 s for the Python
    docs, while a check counted those threads as a reason not to fork)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(24):
        (corpus / f"page{n:02d}.md").write_text(f"# Topic {n}\n\nFusion {n} can fail.\n",
                                               encoding="utf-8")
    code = (
        "import multiprocessing, threading\n"
        "from pathlib import Path\n"
        "from chatbot.chunking import reader\n"
        "from chatbot.config import load_settings\n"
        "from chatbot.documents import corpus_files\n"
        "from chatbot.embedding import MiniLMEmbedder\n"
        "MiniLMEmbedder(bf16=True).embed(['warm-up'])\n"
        f"root = Path({str(corpus)!r}); paths = corpus_files(root)\n"
        "s = load_settings(corpus_dir=root)\n"
        "with reader(len(paths), s) as read_all:\n"
        "    chunks = list(read_all(paths, root))\n"
        "    workers = len(multiprocessing.active_children())\n"
        "print(threading.active_count() > 1, workers, len(chunks))\n")
    assert last_line(code).split() == ["True", "2", "24"]


def test_many_files_are_read_in_worker_processes_with_the_same_chunks_and_problems(tmp_path):
    """#12: a big corpus is parsed in `ingest_workers` processes; the chunks, their order and the
    reasons for skipped files are those of reading in one process. Run in a fresh process,
    which has no other thread, so the worker pool is really used."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(24):
        (corpus / f"page{n:02d}.md").write_text(
            f"# Topic {n}\n\nScrews number {n} may loosen. Fusion {n} can fail.\n",
            encoding="utf-8")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    code = (
        "import threading, sys\n"
        "from pathlib import Path\n"
        "from chatbot.chunking import reader\n"
        "from chatbot.config import load_settings\n"
        "from chatbot.documents import corpus_files\n"
        f"root = Path({str(corpus)!r}); paths = corpus_files(root)\n"
        "s = load_settings(corpus_dir=root)\n"
        "assert threading.active_count() == 1\n"
        "with reader(len(paths), s) as read_all: parallel = list(read_all(paths, root))\n"
        "with reader(len(paths), s.replace(ingest_workers=1)) as read_all:\n"
        "    serial = list(read_all(paths, root))\n"
        "print(parallel == serial, len(parallel),\n"
        "      sum(isinstance(r, str) and 'no text' in r for r in parallel))\n")
    assert last_line(code).split() == ["True", "25", "1"]


class Broken(Counting):
    """The real embedder, except that texts with "Driving" come back as NaN vectors: what a
    damaged model file gave an outside trial, whose ingest then indexed a file nobody could find."""

    def embed(self, texts, progress=False):
        vectors = super().embed(texts, progress)
        vectors[["Driving" in t for t in texts]] = np.nan
        return vectors


def test_vectors_that_are_not_numbers_stop_the_ingest_and_are_never_kept(emb, settings, corpus):
    before = index_mod.ensure(settings, emb)
    kept = _snapshot(settings.index_dir)
    (corpus / "care.md").write_text("# Driving\n\nNo driving for two weeks after surgery.",
                                    encoding="utf-8")
    with pytest.raises(index_mod.IndexError_, match="not numbers for care.md.*minilm"):
        index_mod.rebuild(settings, Broken(emb.real))
    assert {k: v for k, v in _snapshot(settings.index_dir).items() if "cache" not in k} == {
        k: v for k, v in kept.items() if "cache" not in k}  # the last good index in service
    assert len(index_mod.load(settings.index_dir).chunks) == len(before.chunks)
    rebuilt = index_mod.rebuild(settings, emb)  # nothing broken was cached: care.md embedded
    assert np.isfinite(rebuilt.vectors(list(range(len(rebuilt.chunks))))).all()
    assert any("two weeks" in c.text for c in rebuilt.chunks)
