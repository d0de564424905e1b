"""The web app, started in-process on the real models and driven through its public /ask API."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from chatbot import ui
from chatbot.config import load_settings

FAQ = Path(__file__).resolve().parents[1] / "corpus" / "failed-fusion-faq.txt"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(bot):
    app = ui.create_app(bot)
    port = free_port()
    ui.launch(app, bot.settings, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_ask_answers_with_a_citation(url):
    result = client(url).predict("What do pedicle screws do?", api_name="/ask")
    assert not result["refused"]
    assert "[1]" in result["answer"]
    assert any("splint" in c["text"] for c in result["citations"])


def test_ask_refuses_off_topic(url):
    result = client(url).predict("What is the capital of Australia?", api_name="/ask")
    assert result["refused"]
    assert not result["citations"]


def test_sessions_keep_their_own_history(url):
    a, b = client(url), client(url)
    a.predict("What do pedicle screws do?", api_name="/ask")
    follow_up = a.predict("Can they come loose?", api_name="/ask")
    assert "pedicle screws" in follow_up["query"]  # A's follow-up carries A's question
    other = b.predict("Can they come loose?", api_name="/ask")
    assert other["query"] == "Can they come loose?"  # ...and B never sees it
    assert "pedicle" not in other["query"]


# -- uploads (a bot of its own, so the shared FAQ index stays as it was) -------------------

@pytest.fixture
def upload_bot(bot, tmp_path):
    from chatbot.pipeline import Chatbot

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(FAQ, corpus / FAQ.name)
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "index", max_file_mb=0.01)
    return Chatbot(settings, generator=bot.generator)  # models are cached per process: cheap


def no_progress(*args, **kwargs):
    pass


def test_upload_makes_a_document_searchable(upload_bot, tmp_path):
    doc = tmp_path / "Bone growth stimulators.md"
    doc.write_text("# Bone growth stimulators\n\nA bone growth stimulator sends a weak electrical "
                   "current to the fusion site to help the bone heal after spinal fusion surgery.\n")
    report = ui.add_documents(upload_bot, [str(doc)], no_progress)
    assert "Added" in report and "searchable now" in report
    assert (upload_bot.settings.corpus_dir / "Bone-growth-stimulators.md").exists()
    assert "Replacing" in ui.add_documents(upload_bot, [str(doc)], no_progress)  # same name again
    answer = upload_bot.answer("What does a bone growth stimulator do?")
    assert not answer.refused
    assert answer.citations[0].chunk.source == "Bone-growth-stimulators.md"


@pytest.mark.parametrize("name, content, error", [
    ("notes.exe", b"MZ binary", "wrong file type"),
    ("empty.txt", b"", "empty"),
    ("big.txt", b"words " * 5000, "over the 0.01 MB limit"),
    ("blank.md", b"   \n\n  ", "no text"),
])
def test_bad_uploads_are_refused_with_a_reason(upload_bot, tmp_path, name, content, error):
    path = tmp_path / name
    path.write_bytes(content)
    report = ui.add_documents(upload_bot, [str(path)], no_progress)
    assert "Rejected" in report and error in report.replace("\\", "")
    assert not (upload_bot.settings.corpus_dir / name).exists()


# -- rendering -----------------------------------------------------------------------------

def test_document_text_is_escaped_and_spans_marked():
    text = "Intro. <img src=x onerror=alert(1)> is cited. Tail."
    out = ui.highlight(text, 100, [(107, 145)])
    assert "<img" not in out
    assert out == ("Intro. <mark>&lt;img src=x onerror=alert(1)&gt; is cited.</mark> Tail.")


def test_markdown_in_answers_is_shown_literally():
    assert ui.md_escape("**bold** [1] <b>") == r"\*\*bold\*\* \[1\] &lt;b&gt;"
    assert ui.md_escape("the model's #1 & more") == r"the model's \#1 &amp; more"
    assert ui.md_escape("1. not a list") == r"1\. not a list"


def test_sources_panel_for_answer_and_refusal(bot):
    answer = bot.answer("What do pedicle screws do?")
    panel = ui.sources_html(answer)
    assert "<mark>" in panel and "[1]" in panel and "Searched for" in panel
    refusal = ui.sources_html(bot.answer("What is the capital of Australia?"))
    assert 'class="refusal"' in refusal and FAQ.name in refusal
