"""A corpus's glossary: its terms and its readers' everyday words for them."""
import shutil

import numpy as np
import pytest

from chatbot import answerability, glossary
from chatbot.config import SettingsError
from chatbot.documents import unread_files
from conftest import FAQ


def test_a_glossary_maps_everyday_words_to_the_corpus_terms(tmp_path):
    assert glossary.load(tmp_path) == {}  # none: nothing changes
    (tmp_path / "glossary.toml").write_text(
        '[synonyms]\nhardware = ["metalwork", "metal"]\ninstrumentation = ["metal"]\n'
        'surgery = ["op"]\n', encoding="utf-8")
    aliases = glossary.load(tmp_path)
    assert aliases["metal"] == {"hardwar", "instrument"} and aliases["op"] == {"surgeri"}
    # it is the corpus's own file, not a document nobody could read
    (tmp_path / "chatbot.toml").write_text('disclaimer = "x"\n', encoding="utf-8")
    (tmp_path / "notes.docx").write_bytes(b"PK")
    assert unread_files(tmp_path) == ["notes.docx"]


@pytest.mark.parametrize("text, problem", [
    ("[synonyms\n", "is not valid TOML"),
    ('hardware = ["metal"]\n', "has no [synonyms] table"),
    ('[synonyms]\nhardware = "metal"\n', "'hardware' must be a list of single words"),
    ('[synonyms]\nhardware = ["the metal bits"]\n', "'hardware' must be a list of single words"),
    ('[synonyms]\n"chain ring" = ["cog"]\n', "the term 'chain ring' must be one word"),
])
def test_a_bad_glossary_says_what_to_fix(tmp_path, text, problem):
    (tmp_path / "glossary.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match="write it as \\[synonyms\\]") as err:
        glossary.load(tmp_path)
    assert problem in str(err.value) and str(tmp_path / "glossary.toml") in str(err.value)


def test_an_everyday_word_is_covered_by_the_term_it_stands_for():
    """"metal" is no closer than 0.39-0.46 to "hardware" by MiniLM's word vectors (README)."""
    evidence = "Spinal hardware may be used as an internal splint."
    unrelated = lambda ws: np.zeros((len(ws), 4))  # noqa: E731 (no word is close to another)
    question = "Is the metal in my back a splint?"
    assert answerability.term_coverage(question, evidence, unrelated)["metal"] == 0.0
    covered = answerability.term_coverage(question, evidence, unrelated,
                                          aliases={"metal": frozenset({"hardwar"})})
    assert covered["metal"] == 1.0


@pytest.mark.slow
def test_the_pipeline_reads_the_corpus_glossary(tmp_path, embedder):
    """With the glossary beside the FAQ, "metalwork" is no longer a word the documents lack."""
    from chatbot.config import load_settings
    from chatbot.pipeline import Chatbot

    shutil.copy(FAQ, tmp_path / FAQ.name)
    settings = load_settings(corpus_dir=tmp_path, index_dir=tmp_path / "index",
                             generator="extractive")
    question = "can the metalwork actually snap??"
    before = Chatbot(settings, embedder=embedder)
    assert "metalwork" in before.answer(question).note
    (tmp_path / "glossary.toml").write_text(
        '[synonyms]\nhardware = ["metalwork"]\nbreak = ["snap"]\n', encoding="utf-8")
    after = Chatbot(settings, embedder=embedder)
    answer = after.answer(question)
    assert "metalwork" not in answer.note and "snap" not in answer.note, answer.note
    assert answer.signals["p_answerable"] > before.answer(question).signals["p_answerable"]


def test_an_everyday_word_for_a_term_the_corpus_has_is_not_said_to_be_missing_from_it():
    """A patient read "they do not mention metal" under an FAQ on spinal hardware: the passages
    found lack it, the documents do not."""
    unrelated = lambda ws: np.zeros((len(ws), 4))  # noqa: E731
    evidence = "You can ruin your spinal fusion if you bend excessively."
    args = ("Is it bad to leave all that metal in me forever?", 0.5, 0.5, 0.5, evidence,
            [evidence], unrelated)
    corpus = {"hardwar", "bend", "fusion"}
    alone = answerability.signals(*args, corpus=corpus)
    assert "metal" in alone.missing and "metal" not in alone.elsewhere
    known = answerability.signals(*args, corpus=corpus, aliases={"metal": frozenset({"hardwar"})})
    assert "metal" in known.missing and "metal" in known.elsewhere


def test_a_term_no_document_uses_is_said_at_ingest(tmp_path):
    """An outside trial's misspelt term (`derailer = ["gears"]`) was silently ignored, and a
    broken glossary was only reported at the next `ask`."""
    from test_cli import one_line_error, run

    (tmp_path / "corpus").mkdir()
    shutil.copy(FAQ, tmp_path / "corpus" / FAQ.name)
    glossary_file = tmp_path / "corpus" / "glossary.toml"
    glossary_file.write_text('[synonyms]\nhardware = ["metal"]\nharware = ["rods"]\n',
                             encoding="utf-8")
    out = run("ingest", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no document uses harware, so the words listed for it never count" in out.stderr
    assert "hardware," not in out.stderr and "Not read" not in out.stderr  # not a document
    glossary_file.write_text('[synonyms\n', encoding="utf-8")
    assert "is not valid TOML" in one_line_error(run("ingest", cwd=tmp_path))
