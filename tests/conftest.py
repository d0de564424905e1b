"""Shared fixtures: the real packaged models on the real seed FAQ, loaded once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chatbot.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"


@pytest.fixture(scope="session")
def faq_corpus(tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus")
    shutil.copy(FAQ, corpus / FAQ.name)
    return corpus


@pytest.fixture(scope="session")
def settings(faq_corpus, tmp_path_factory):
    return load_settings(corpus_dir=faq_corpus, index_dir=tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once for the session and passed to everything."""
    from chatbot.embedding import MiniLMEmbedder

    return MiniLMEmbedder()


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
