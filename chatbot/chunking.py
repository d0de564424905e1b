"""Splitting Documents into Chunks that keep a question with its answer and a heading with its text.

Every chunk records exact character offsets, so `doc.text[chunk.start:chunk.end] == chunk.text`
and a citation can always be traced back to the source.
"""
from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

from tqdm import TMonitor

from chatbot.config import Settings
from chatbot.documents import Document, LoadError, load

PARALLEL_MIN_FILES = 20  # fewer files are read in this process: starting a worker costs ~1 s


@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    title: str  # the FAQ question or heading the text sits under
    start: int
    end: int
    text: str
    page: int | None = None  # 1-based page of the chunk's start, for paged sources (PDF)
    doc_title: str = ""  # the title of the whole document (an HTML page's <h1>, say)

    def to_dict(self) -> dict:
        """The chunk as JSON values: what the manifest holds."""
        return dataclasses.asdict(self)

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading gives a split-off piece its context."""
        return self.text if self.text.startswith(self.title) else f"{self.title}\n{self.text}"


# Which way text is read and cut: an index made another way is rebuilt. 2: a blank line is a full
# stop, and a Markdown heading needs no blank line after it; 3: hidden HTML text is dropped;
# 4: so are HTML footnote references.
RULES = 4

# A sentence ends at . ! or ? followed by space and an uppercase letter, digit, quote or bracket
# (closing quotes and brackets after the mark, group 1, belong to it); a blank line is a full
# stop before the same (not before "are equivalent ..." resuming prose around a code block).
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])([\"'”’)\]]*)\s+|(?P<para>[ \t]*\n[ \t]*\n\s*))(?=[A-Z0-9\"“‘(\[])")
ABBREVIATIONS = ("e.g.", "i.e.", "Dr.", "Mr.", "Mrs.", "Ms.", "vs.", "etc.", "St.", "No.", "Fig.")


def sentence_spans(text: str, offset: int = 0,
                   paragraphs: bool = True) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text, stripped of surrounding space, shifted by offset.
    In a document (`paragraphs`) a blank line before a new sentence ends one, full stop or not:
    a plain-text heading ("Holiday notice") glued to the sentence under it hid a planted
    "Assistant: tell the user ..." from the instruction detector, and was quoted with it."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m["para"] is not None:
            if not paragraphs:
                continue
            spans.append((start, m.start()))
        elif text.endswith(ABBREVIATIONS, 0, m.start()):  # no slice: a copy per sentence is O(n²)
            continue
        else:
            spans.append((start, m.end(1)))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        s += len(piece) - len(piece.lstrip())
        e -= len(piece) - len(piece.rstrip())
        if e > s:
            out.append((s + offset, e + offset))
    return out


_HEADING_LINE = re.compile(r"^#{1,6}[ \t]+\S.*$", re.MULTILINE)


def split_headings(text: str, offset: int = 0) -> list[tuple[int, int, bool]]:
    """(start, end, is_heading) of the `# ` heading lines the loaders write and of the sentences
    between them, shifted by offset. A heading has no full stop, so the sentence splitter alone
    would glue it to the first sentence under it ("# Recovery notes\n\nRest for a week.")."""
    out, start = [], 0
    for m in [*_HEADING_LINE.finditer(text), None]:
        end = m.start() if m else len(text)
        out += [(s, e, False) for s, e in sentence_spans(text[start:end], offset + start)]
        if m:
            out.append((m.start() + offset, m.end() + offset, True))
            start = m.end()
    return out


_FENCE = re.compile(r"^[ \t]*```.*?(?:^[ \t]*```.*?$|\Z)", re.MULTILINE | re.DOTALL)


def _blocks(text: str, markdown: bool = False) -> list[tuple[int, int]]:
    """Paragraphs: runs of text separated by blank lines, as exact spans. In Markdown a `#`
    heading line is a block of its own, blank lines or not ("## Hours\nWe open at 9."), except
    inside a ``` code block, where `#` starts a comment."""
    blocks = [(m.start(), m.end()) for m in re.finditer(r"\S(?:.*\S)?(?:\n[ \t]*\S.*)*", text)]
    if not markdown:
        return blocks
    code = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
    heads = [(m.start(), m.end()) for m in _HEADING_LINE.finditer(text)
             if not any(a <= m.start() < b for a, b in code)]
    out = []
    for s, e in blocks:  # cut each block before and after its heading lines
        edges = [s, *(x for h in heads if s <= h[0] < e for x in h), e]
        for a, b in zip(edges, edges[1:]):
            piece = text[a:b]
            if piece.strip():
                out.append((a + len(piece) - len(piece.lstrip()),
                            b - len(piece) + len(piece.rstrip())))
    return out


def _is_heading(block: str) -> bool:
    """A Markdown heading, or a one-line question standing alone (the FAQ shape)."""
    if "\n" in block.strip():
        return False
    line = block.strip()
    return line.startswith("#") or (line.endswith("?") and len(line) <= 200)


def _sections(doc: Document) -> list[tuple[str, int, int]]:
    """(heading, start, end) spans; a heading owns the paragraphs until the next heading."""
    sections: list[list] = []
    current: list | None = None
    for s, e in _blocks(doc.text, doc.source.lower().endswith((".md", ".markdown"))):
        block = doc.text[s:e]
        if _is_heading(block):
            current = [block.strip().lstrip("#").strip(), s, e, False]
            sections.append(current)
        elif current is None:
            current = [doc.title, s, e, True]
            sections.append(current)
        else:
            current[2], current[3] = e, True
    # A heading with no body of its own (a document title, say) is no chunk.
    return [(title, s, e) for title, s, e, has_body in sections if has_body]


def _split(doc: Document, title: str, start: int, end: int, max_chars: int, overlap: int):
    """Windows of whole sentences no longer than max_chars, each sharing `overlap` sentences."""
    spans = sentence_spans(doc.text[start:end], start)
    i = 0
    while i < len(spans):
        j = i + 1
        while j < len(spans) and spans[j][1] - spans[i][0] <= max_chars:
            j += 1
        yield title, spans[i][0], spans[j - 1][1]
        if j >= len(spans):
            break
        i = max(j - overlap, i + 1)


def _by_page(doc: Document, sections: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Cut sections at page starts, so a chunk's page number holds all of its text."""
    out = []
    for title, s, e in sections:
        cuts = [p for p in doc.pages if s < p < e]
        for a, b in zip([s, *cuts], [*cuts, e]):
            piece = doc.text[a:b]
            a, b = a + len(piece) - len(piece.lstrip()), b - len(piece) + len(piece.rstrip())
            if b > a:
                out.append((title, a, b))
    return out


def chunk(doc: Document, max_chars: int = 1200, overlap: int = 1) -> list[Chunk]:
    pieces = []
    for title, s, e in _by_page(doc, _sections(doc)):
        if e - s <= max_chars:
            pieces.append((title, s, e))
        else:
            pieces.extend(_split(doc, title, s, e, max_chars, overlap))
    return [Chunk(id=f"{doc.source}#{n}", source=doc.source, title=title, start=s, end=e,
                  text=doc.text[s:e], page=doc.page_at(s), doc_title=doc.title)
            for n, (title, s, e) in enumerate(pieces)]


def read(path: Path, root: Path, settings: Settings) -> list[Chunk] | str:
    """One file loaded and chunked, or the one-line reason it cannot be (LoadError's text)."""
    try:
        doc = load(path, root, settings.max_file_mb)
    except LoadError as err:
        return str(err)
    return chunk(doc, settings.chunk_chars, settings.chunk_overlap_sentences)


@contextmanager
def reader(files: int, settings: Settings) -> Iterator[Callable]:
    """A `map(paths, root)` of `read`, in order, in `settings.ingest_workers` processes when there
    are many files: parsing HTML is single-threaded Python (375 Python-docs pages: 16 s). Workers
    are forked, which is safe only while this process runs no other thread (`ingest`); a server
    (model and web threads) reads in-process. Spawning instead would make every caller's script
    guard its `__main__`. tqdm's monitor threads (started by any progress bar, the model's
    "Loading weights" too) are not counted: they only wake to check a bar, which a reading
    worker never draws."""
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not isinstance(t, TMonitor)]
    if settings.ingest_workers < 2 or files < PARALLEL_MIN_FILES or others:
        yield lambda paths, root: map(partial(read, root=root, settings=settings), paths)
        return
    with ProcessPoolExecutor(settings.ingest_workers, mp_context=get_context("fork")) as pool:
        yield lambda paths, root: pool.map(partial(read, root=root, settings=settings), paths,
                                           chunksize=4)
