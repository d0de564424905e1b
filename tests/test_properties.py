"""Property-based tests (hypothesis): the chunker's spans, the citation parser, and the loaders
on random bytes. No models: these run in seconds, bounded by max_examples and deadline."""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.chunking import chunk, sentence_spans
from chatbot.documents import Document, LoadError, load
from chatbot.grounding import LIST_NUMBER, answer_sentences, split_citations

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- documents that look like the corpus: sentences, headings, FAQ questions, odd text ------------

_word = st.text("abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=9)
_words = st.lists(_word, min_size=1, max_size=12).map(" ".join)
_sentence = st.builds(lambda first, rest, end: first + rest + end,
                      st.sampled_from(["The", "A", "Bone", "3", "\"Rest", "(See", "e.g.", "Dr."]),
                      _words.map(lambda w: " " + w),
                      st.sampled_from([".", "!", "?", ".\"", ".)", "", " etc.", "…"]))
_heading = st.one_of(_words.map(lambda w: "# " + w.capitalize()),
                     _words.map(lambda w: "## " + w),
                     _words.map(lambda w: w.capitalize() + "?"))
_piece = st.one_of(_sentence, _sentence, _sentence, _heading, st.text(max_size=20))
_separator = st.sampled_from([" ", " ", "  ", "\n", "\n\n", "\n \n", "\r\n", "\t"])


@st.composite
def documents(draw) -> Document:
    pieces = draw(st.lists(st.tuples(_piece, _separator), max_size=40))
    text = "".join(p + s for p, s in pieces)
    pages: tuple[int, ...] = ()
    if text and draw(st.booleans()):  # a PDF: pages start at sorted offsets, the first at 0
        cuts = draw(st.lists(st.integers(1, max(len(text) - 1, 1)), max_size=4, unique=True))
        pages = (0, *sorted(c for c in cuts if c < len(text)))
    return Document(source="doc.txt", text=text, title="Doc", pages=pages)


def _is_heading_line(line: str) -> bool:
    line = line.strip()
    return line.startswith("#") or (line.endswith("?") and len(line) <= 200)


@FAST
@given(documents(), st.integers(20, 400), st.integers(0, 2))
def test_chunks_are_exact_spans_that_lose_no_text(doc, max_chars, overlap):
    chunks = chunk(doc, max_chars, overlap)
    covered = bytearray(len(doc.text))
    for c in chunks:
        assert 0 <= c.start < c.end <= len(doc.text)
        assert doc.text[c.start:c.end] == c.text  # a citation maps back to the source exactly
        assert c.page == doc.page_at(c.start)
        covered[c.start:c.end] = b"\1" * (c.end - c.start)
        if len(c.text) > max_chars:  # only one sentence too long to cut may exceed the size
            assert len(sentence_spans(c.text)) == 1, c.text
    # What no chunk holds is white space or a heading with no text under it (a title line).
    for n, ch in enumerate(doc.text):
        if not covered[n] and not ch.isspace():
            line_start = doc.text.rfind("\n", 0, n) + 1
            line_end = doc.text.find("\n", n)
            line = doc.text[line_start:line_end if line_end >= 0 else None]
            assert _is_heading_line(line), f"{ch!r} at {n} in {line!r} is in no chunk"


# -- the citation parser ---------------------------------------------------------------------------

_plain = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80).filter(
    lambda t: not re.search(r"\[\d+\]", t))


@FAST
@given(_plain.filter(lambda t: t.strip() and not t[-1].isspace()),
       st.lists(st.integers(1, 99), min_size=1, max_size=3))
def test_citation_markers_round_trip(text, numbers):
    marked = text + " " + "".join(f"[{n}]" for n in numbers)
    assert split_citations(marked) == (text.strip(), numbers)


@FAST
@given(_plain)
def test_text_without_markers_is_unchanged(text):
    assert split_citations(text) == (text.strip(), [])


_markers = st.lists(st.integers(1, 120), min_size=1, max_size=3).map(
    lambda ns: "".join(f"[{n}]" for n in ns))


@FAST
@given(st.lists(st.one_of(_sentence, st.text(max_size=15), _markers), max_size=20).map(" ".join))
def test_answer_sentences_never_raise_and_keep_all_text(text):
    sentences = answer_sentences(text)
    assert all(s and s.strip() == s for s in sentences)
    text = LIST_NUMBER.sub("", text)  # a list item's number is layout, dropped on purpose
    joined = " ".join(sentences)
    if re.match(r"\s*\[\d+\]", text):  # markers first: each moves behind its own sentence
        marker = re.compile(r"\[\d+\]")
        assert sorted(marker.findall(joined)) == sorted(marker.findall(text))
        joined, text = marker.sub("", joined), marker.sub("", text)
    assert "".join(joined.split()) == "".join(text.split())  # no text lost or moved


_claim = st.builds(lambda first, rest, end: first + rest + end,
                   st.sampled_from(["The", "A", "Bone", "3", "\"Rest", "Pain"]),
                   _words.map(lambda w: " " + w), st.sampled_from([".", "!", ".\"", ".)"]))


@FAST
@given(st.lists(st.tuples(_claim, _markers), min_size=1, max_size=6))
def test_an_answer_splits_into_its_cited_sentences(claims):
    """The pipeline writes each sentence followed by its markers: they come back as written."""
    written = [f"{sentence} {markers}" for sentence, markers in claims]
    assert answer_sentences(" ".join(written)) == written
    for line, (sentence, markers) in zip(written, claims):
        assert split_citations(line) == (sentence, [int(n) for n in re.findall(r"\d+", markers)])


# -- loaders on random bytes -----------------------------------------------------------------------

_pdfish = st.binary(max_size=400).map(lambda b: b"%PDF-1.4\n" + b)
_htmlish = st.text(max_size=300).map(lambda t: f"<html><body><h1>{t}</h1><p>{t}</p>".encode())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=600), _pdfish, _htmlish),
       st.sampled_from([".txt", ".md", ".html", ".pdf"]))
def test_loaders_return_a_document_or_a_load_error(tmp_path_factory, data, suffix):
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    path = Path(folder) / f"random{suffix}"
    path.write_bytes(data)
    try:
        doc = load(path, folder)
    except LoadError as err:
        assert str(err).startswith(f"random{suffix}: ")  # names the file
    else:
        assert doc.text.strip() and doc.source == f"random{suffix}"
        assert all(doc.text[c.start:c.end] == c.text for c in chunk(doc))
