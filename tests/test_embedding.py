"""The Embedder seam: the index, retrieval and the pipeline run on any embedder passed in. A fake
one that hashes words (tests/fakes.py) makes these tests fast and loads no model."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder
from fresh import last_line

from chatbot import index as index_mod
from chatbot.config import load_settings
from chatbot.embedding import (Embedder, MiniLMEmbedder, OnnxMiniLMEmbedder,
                               OpenVinoMiniLMEmbedder, openvino_model)
from chatbot.pipeline import Chatbot

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"


@pytest.fixture
def fake_bot(tmp_path) -> Chatbot:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(FAQ, corpus / FAQ.name)
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "index",
                             generator="extractive")
    return Chatbot(settings, embedder=FakeEmbedder())


def test_the_fake_and_the_packaged_embedder_fit_the_protocol():
    fake = FakeEmbedder()
    assert isinstance(fake, Embedder) and isinstance(MiniLMEmbedder(), Embedder)
    assert isinstance(OnnxMiniLMEmbedder(), Embedder)
    vectors = fake.embed(["pedicle screws", "screws pedicle", "zebra", ""])
    assert vectors.dtype == np.float32 and vectors.shape == (4, fake.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[0] @ vectors[1] == pytest.approx(1.0) and vectors[0] @ vectors[2] == 0


def test_the_index_is_built_with_the_embedder_passed_in(fake_bot):
    index = fake_bot.index
    assert index.manifest["embedder"] == FakeEmbedder.id
    assert index.manifest["dim"] == FakeEmbedder().dim
    # Another embedder makes it stale: its vectors would mean nothing to the new one.
    assert "embedder changed" in index_mod.staleness(index, fake_bot.settings, MiniLMEmbedder())


def test_the_pipeline_answers_and_refuses_with_the_fake(fake_bot):
    answer = fake_bot.answer("Can pedicle screws come loose?")
    assert not answer.refused, answer.text
    assert "screw" in answer.citations[0].chunk.text.lower()
    off_topic = fake_bot.answer("zebra xylophone quantum chromodynamics")
    assert off_topic.refused and off_topic.outcome.code.value == "no_close_passage"


def test_the_fake_loads_no_model():
    """In a process of its own: building an index and answering with the fake never imports
    sentence-transformers or torch."""
    code = ("import sys, tempfile, shutil, pathlib\n"
            "sys.path.insert(0, 'tests')\n"
            "from fakes import FakeEmbedder\n"
            "from chatbot.config import load_settings\n"
            "from chatbot.pipeline import Chatbot\n"
            "tmp = pathlib.Path(tempfile.mkdtemp())\n"
            "(tmp / 'c').mkdir()\n"
            f"shutil.copy({str(FAQ)!r}, tmp / 'c')\n"
            "s = load_settings(corpus_dir=tmp / 'c', index_dir=tmp / 'i', generator='extractive')\n"
            "Chatbot(s, embedder=FakeEmbedder()).answer('Can pedicle screws come loose?')\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))\n")
    assert last_line(code) == "[]"


def test_reindex_swaps_one_snapshot_and_a_running_question_keeps_its_own(fake_bot):
    before = fake_bot.snapshot
    running = fake_bot.stream("What do pedicle screws do?")  # a full answer, drafted
    assert isinstance(next(running), str)  # retrieved, now drafting
    (fake_bot.settings.corpus_dir / "driving.md").write_text(
        "# Driving\n\nMost patients may drive two weeks after surgery.\n", encoding="utf-8")
    fake_bot.reindex()
    *_, answer = running
    assert "driving.md" not in answer.sources and answer.citations
    after = fake_bot.snapshot
    assert after is not before and "driving.md" in after.index.sources
    assert after.retriever.index is after.index is fake_bot.index
    assert before.retriever.index is before.index and "driving.md" not in before.index.sources
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.index = before.index  # type: ignore[misc]


@pytest.mark.slow
def test_the_onnx_openvino_and_torch_runtimes_share_one_vector_space(embedder, tmp_path):
    """Questions are embedded by int8 ONNX, the index in bulk by OpenVINO (or torch; bf16 where
    the CPU has it): the vectors must agree closely enough that every question finds the same
    passage."""
    text = FAQ.read_text(encoding="utf-8")
    passages = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40][:40]
    questions = ["What do pedicle screws do?", "can i smoke after my op", "is it normal to hurt",
                 "how do doctors check the bones knitted", "when will I be able to drive"]
    fp32 = MiniLMEmbedder(bf16="off")
    runtimes = {"onnx": embedder, "bf16": MiniLMEmbedder(bf16="on"),
                "openvino": OpenVinoMiniLMEmbedder(tmp_path), "openvino-fp32":
                OpenVinoMiniLMEmbedder(tmp_path, bf16="off")}
    reference = fp32.embed(passages)
    for name, other in runtimes.items():
        vectors = other.embed(passages)
        assert vectors.dtype == np.float32 and vectors.shape == reference.shape
        cosine = (vectors * reference).sum(axis=1)
        assert cosine.min() >= (0.998 if name == "onnx" else 0.999), (name, cosine.min())
        nearest = (other.embed(questions) @ vectors.T).argmax(axis=1)
        assert list(nearest) == list((fp32.embed(questions) @ reference.T).argmax(axis=1)), name


def test_answering_with_the_default_embedder_never_imports_torch(tmp_path):
    """Start-up and memory (#12): a fresh index built and a question answered with the default
    settings load onnxruntime, not torch or sentence-transformers (3.5 s and ~270 MB)."""
    shutil.copytree(FAQ.parent, tmp_path / "c")
    code = ("import sys\n"
            "from chatbot import Chatbot\n"
            f"bot = Chatbot.from_settings(corpus_dir={str(tmp_path / 'c')!r}, "
            f"index_dir={str(tmp_path / 'i')!r}, generator='extractive')\n"
            "assert bot.answer('Can pedicle screws come loose?').citations\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'onnxruntime') "
            "if m in sys.modules))\n")
    assert last_line(code) == "['onnxruntime']"


@pytest.mark.slow
def test_ingest_converts_the_model_for_openvino_once_then_runs_without_torch(tmp_path,
                                                                             monkeypatch):
    """Bulk embedding runs on OpenVINO (1.6x torch's speed here, #12). The model is converted
    from the packaged weights once, through torch; later ingests read the converted file."""
    import openvino

    cache = tmp_path / "cache"
    converted = Path(openvino_model(cache))
    assert converted.is_file() and not list(converted.parent.parent.glob("*.part"))

    def convert_again(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(openvino, "convert_model", convert_again)
    assert Path(openvino_model(cache)) == converted
    shutil.copytree(FAQ.parent, tmp_path / "c")
    code = ("import sys\n"
            "from chatbot import index\n"
            "from chatbot.config import load_settings\n"
            "from chatbot.embedding import make_bulk_embedder\n"
            f"s = load_settings(corpus_dir={str(tmp_path / 'c')!r}, "
            f"index_dir={str(tmp_path / 'i')!r}, cache_dir={str(cache)!r})\n"
            "built = index.rebuild(s, make_bulk_embedder(s))\n"
            "assert len(built.chunks) > 5\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'openvino') "
            "if m in sys.modules))\n")
    assert last_line(code) == "['openvino']"


@pytest.mark.slow
def test_a_damaged_or_unwritable_model_cache_costs_a_conversion_not_the_ingest(tmp_path, caplog):
    texts = ["Pedicle screws may loosen.", "A fusion can fail."]
    reference = OpenVinoMiniLMEmbedder(tmp_path).embed(texts)
    xml = next(tmp_path.glob("models/minilm-openvino-*/model.xml"))
    xml.write_text("<net>damaged", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        again = OpenVinoMiniLMEmbedder(tmp_path).embed(texts)
    assert np.allclose(again, reference, atol=1e-4) and "converting it again" in caplog.text
    assert xml.read_text(encoding="utf-8").startswith("<?xml")  # the cache is whole again
    weights = xml.with_name("model.bin")  # random bytes inside: NaN vectors in an outside trial
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(np.random.default_rng(0).bytes(4 << 20))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        healed = OpenVinoMiniLMEmbedder(tmp_path).embed(texts)
    assert np.allclose(healed, reference, atol=1e-4) and "damaged" in caplog.text
    blocked = tmp_path / "blocked"  # a cache that cannot be written (a file where a folder goes)
    blocked.mkdir()
    (blocked / "models").write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        unkept = OpenVinoMiniLMEmbedder(blocked).embed(texts)
    assert np.allclose(unkept, reference, atol=1e-4) and "converted at every run" in caplog.text


def test_the_cross_question_cache_embeds_each_text_once_and_stays_bounded():
    from chatbot.embedding import Remembering

    inner = FakeEmbedder()
    cache = Remembering(inner, capacity=2)
    first = cache.embed(["a screw", "a rod"])
    assert (cache.embed(["a rod", "a screw"]) == first[::-1]).all() and inner.calls == 1
    cache.embed(["a plate"])  # "a rod" was used least recently: dropped
    assert list(cache.known) == ["a screw", "a plate"] and inner.calls == 2


@pytest.mark.slow
def test_the_onnx_embedder_keeps_its_batches_small_and_its_vectors_unchanged(embedder):
    """onnxruntime keeps the memory of its largest batch for good: 16 passages of 256 tokens
    grew a serving process by 670 MB (#12). Long texts go a few at a time, short ones 16 at a
    time, and every text's vector is the one it gets when embedded alone."""
    onnx = OnnxMiniLMEmbedder()
    onnx._load()
    session = onnx._session
    shapes = []

    class Recording:
        def run(self, names, feeds):
            shapes.append(feeds["input_ids"].shape)
            return session.run(names, feeds)

    onnx._session = Recording()
    text = FAQ.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    texts = [(text * 3)[i:i + 1500] for i in range(0, 6000, 300)] + lines[:30]
    vectors = onnx.embed(texts)
    assert max(rows * width for rows, width in shapes) <= onnx.batch_tokens
    assert max(rows for rows, _ in shapes) == onnx.batch_size  # short lines still batched
    alone = np.concatenate([embedder.embed([t]) for t in texts[::7]])
    assert (vectors[::7] * alone).sum(axis=1).min() > 0.9999
