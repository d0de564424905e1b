"""The library surface: `from chatbot import Chatbot, Settings, Answer`, cheap and side-effect free
to import, and `Chatbot.from_settings`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeEmbedder

from chatbot.config import SettingsError

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"

PROBE = """
import json, os, sys
before = dict(os.environ)
import chatbot
after_import = dict(os.environ)
from chatbot import Answer, Chatbot, Settings
print(json.dumps({"changed": sorted(set(after_import.items()) ^ set(before.items())),
                  "changed_by_names": sorted(set(os.environ.items()) ^ set(before.items())),
                  "heavy": sorted(m for m in ("torch", "transformers", "sentence_transformers",
                                              "gradio", "huggingface_hub") if m in sys.modules),
                  "names": [Answer.__name__, Chatbot.__name__, Settings.__name__]}))
"""


def test_importing_chatbot_changes_no_environment_and_loads_no_model():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_"))}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["changed"] == [] and out["changed_by_names"] == []
    assert out["heavy"] == []
    assert out["names"] == ["Answer", "Chatbot", "Settings"]


def test_an_unknown_name_is_an_attribute_error():
    import chatbot

    with pytest.raises(AttributeError, match="no attribute 'Chatbott'"):
        chatbot.Chatbott  # noqa: B018


def test_from_settings_takes_overrides_and_checks_them(tmp_path, monkeypatch):
    from chatbot import Answer, Chatbot

    for var in [v for v in os.environ if v.startswith("CHATBOT_")]:
        monkeypatch.delenv(var)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(FAQ, corpus / FAQ.name)
    bot = Chatbot.from_settings(corpus_dir=str(corpus), index_dir=str(tmp_path / "index"),
                                generator="extractive", embedder=FakeEmbedder())
    assert bot.settings.corpus_dir == corpus and bot.settings.top_k == 4
    answer = bot.answer("Can pedicle screws come loose?")
    assert isinstance(answer, Answer) and answer.citations
    with pytest.raises(SettingsError, match="top_k"):
        Chatbot.from_settings(corpus_dir=str(corpus), top_k=0, embedder=FakeEmbedder())
    again = Chatbot.from_settings(bot.settings, top_k=2, embedder=FakeEmbedder())
    assert again.settings.top_k == 2 and again.settings.corpus_dir == corpus
