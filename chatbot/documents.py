"""Reading corpus files into Documents. One loader per suffix; bad files raise LoadError with a
reason.

Every loader produces plain text with Markdown-like `# ` heading lines, so one chunker serves
all formats and keeps a heading with the text under it.
"""
from __future__ import annotations

import bisect
import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bs4 import (BeautifulSoup, CData, Comment, Declaration, Doctype, NavigableString,
                 ProcessingInstruction, Tag)

from chatbot import hidden
from chatbot.config import CORPUS_CONFIG
from chatbot.glossary import GLOSSARY_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the corpus folder, with forward slashes
    text: str
    title: str
    # start offset of each page in `text` (PDFs), so citations name a page
    pages: tuple[int, ...] = ()

    def page_at(self, offset: int) -> int | None:
        """1-based page holding the character at offset, or None for documents without pages."""
        return bisect.bisect_right(self.pages, offset) if self.pages else None


class LoadError(Exception):
    """A file that cannot become a Document; the message says why and what to do."""


def _decode(raw: bytes, name: str) -> str:
    if b"\x00" in raw[:8192]:
        raise LoadError(f"{name}: looks binary (NUL bytes), not text; remove it, or save "
                        "its text as plain text (UTF-8)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # Most non-UTF-8 text in the wild is Windows-1252; keep it rather than lose the file.
        log.warning("%s is not UTF-8 (byte %d); read it as Windows-1252. "
                    "Save it as UTF-8 to be sure.", name, err.start)
        text = raw.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return fallback


def _load_text(path: Path, source: str) -> Document:
    text = _decode(path.read_bytes(), source)
    return Document(source=source, text=text, title=_title(text, path.stem))


# Page furniture that is not content: scripts, navigation, Sphinx's sidebars and permalinks.
# Page furniture dropped before reading: whole tags, tags with a class, and ARIA roles. Matched by
# one predicate per element, not CSS selectors (a quarter of all parsing time on 375 pages).
_JUNK_TAGS = frozenset("script style noscript nav header footer form button svg".split())
# A footnote reference ("... JavaScript [1] ).") would read as an answer's citation marker
# when quoted: 54 of the Python docs' 375 pages have them.
_JUNK_CLASSES = {"div": frozenset({"related", "sphinxsidebar", "footer"}),
                 "a": frozenset({"headerlink", "footnote-reference"})}
_JUNK_ROLES = frozenset({"navigation", "search", "doc-noteref"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = frozenset("p div section article main aside blockquote ul ol li dl dt dd "
                    "caption figure figcaption br hr".split())


def _html_blocks(node: Tag, out: list[str], inline: list[str]) -> None:
    """Flatten HTML into paragraphs; headings (and Sphinx signatures, which head an API entry)
    become `# ` lines, code keeps its line breaks."""
    def flush() -> None:
        text = " ".join("".join(inline).split())
        if text:
            out.append(text)
        inline.clear()

    for child in node.children:
        if isinstance(child, (Comment, CData, ProcessingInstruction, Declaration, Doctype)):
            continue  # never shown (an outside re-test hid text in <![CDATA[...]]>)
        if isinstance(child, NavigableString):
            inline.append(str(child))
        elif not isinstance(child, Tag):
            continue
        elif (child.name in _HEADINGS
              or (child.name == "dt" and "sig" in (child.get("class") or []))):
            flush()
            heading = " ".join(child.get_text().split())  # no separator: signatures are many spans
            if heading:
                out.append("#" * _HEADINGS.get(child.name, 4) + " " + heading)
        elif child.name == "table":
            flush()
            rows = [" | ".join(" ".join(cell.get_text(" ").split())
                               for cell in row.find_all(["td", "th"]))
                    for row in child.find_all("tr")]
            if any(r.strip(" |") for r in rows):
                out.append("\n".join(r for r in rows if r.strip(" |")))
        elif child.name == "pre":
            flush()
            code = re.sub(r"\n\s*\n", "\n", child.get_text().strip("\n")).rstrip()
            if code.strip():
                out.append(code)
        elif child.name in _BLOCKS:
            flush()
            _html_blocks(child, out, inline)
            flush()
        else:
            _html_blocks(child, out, inline)


def _is_junk(tag: Tag) -> bool:
    return (tag.name in _JUNK_TAGS or tag.get("role") in _JUNK_ROLES
            or not _JUNK_CLASSES.get(tag.name, frozenset()).isdisjoint(tag.get("class") or ()))


def _load_html(path: Path, source: str) -> Document:
    soup = BeautifulSoup(_decode(path.read_bytes(), source), "html.parser")
    title_tag, h1 = soup.find("title"), soup.find("h1")
    classes, ids = hidden.hidden_selectors(soup)  # before <style> goes with the furniture
    for junk in soup.find_all(lambda t: _is_junk(t) or hidden.is_hidden(t, classes, ids)):
        junk.decompose()
    main = soup.select_one("[role=main]") or soup.find("main") or soup.body or soup
    blocks: list[str] = []
    _html_blocks(main, blocks, [])
    text = "\n\n".join(blocks)
    title = next((" ".join(t.get_text(" ").split()) for t in (h1, title_tag)
                  if t is not None and t.get_text().strip()), "")
    return Document(source=source, text=text, title=title[:200] or _title(text, path.stem))


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


_PYPDF_LOG = threading.Lock()  # the pypdf logger is process-wide: one PDF at a time is collected


@contextmanager
def _pypdf_warnings() -> Iterator[list[str]]:
    """pypdf logs a warning for every defect it works around ("incorrect startxref pointer",
    dozens for one damaged file); collect them, so the file gets one line of ours instead."""
    logger, messages = logging.getLogger("pypdf"), []
    handler = _Collect(messages)
    with _PYPDF_LOG:
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            yield messages
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate


def _load_pdf(path: Path, source: str) -> Document:
    from pypdf import PdfReader

    with _pypdf_warnings() as defects:
        try:
            reader = PdfReader(path)
            if reader.is_encrypted and not reader.decrypt(""):
                raise LoadError(f"{source}: the PDF is encrypted with a password; save an "
                                "unprotected copy")
            texts = [(page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n").strip()
                     for page in reader.pages]
            meta_title = (reader.metadata or {}).get("/Title")
        except LoadError:
            raise
        except Exception as err:  # pypdf raises many types on damaged files; all mean "unreadable"
            raise LoadError(f"{source}: not a readable PDF ({type(err).__name__}: {err})") from err
    if defects:
        log.warning("%s: the PDF is damaged or non-standard (%d problem%s worked around, first: "
                    "%s); its text was read but may be incomplete: re-save or re-export it to be "
                    "sure", source, len(defects), "s" * (len(defects) > 1), defects[0])
    pages, parts, offset = [], [], 0
    for text in texts:
        pages.append(offset)
        parts.append(text)
        offset += len(text) + 2  # the "\n\n" joining pages keeps page text in separate paragraphs
    text = "\n\n".join(parts)
    title = str(meta_title).strip() if meta_title else _title(text, path.stem)
    return Document(source=source, text=text, title=title[:200], pages=tuple(pages))


LOADERS = {".txt": _load_text, ".md": _load_text, ".markdown": _load_text,
           ".html": _load_html, ".htm": _load_html, ".pdf": _load_pdf}


def load(path: Path, root: Path, max_mb: float = 50.0) -> Document:
    """Read one file; `root` makes the source name relative so citations survive moving the
    corpus."""
    source = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"{source}: unsupported file type {path.suffix!r}; "
                        f"supported: {sorted(LOADERS)}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise LoadError(f"{source}: cannot read ({err.strerror})") from err
    if size > max_mb * 1e6:
        raise LoadError(f"{source}: {size / 1e6:.1f} MB is over the {max_mb:g} MB limit "
                        "(max_file_mb); split the file, or raise the limit (CHATBOT_MAX_FILE_MB)")
    try:
        doc = loader(path, source)
    except OSError as err:
        raise LoadError(f"{source}: cannot read ({err.strerror})") from err
    if not doc.text.strip():
        raise LoadError(f"{source}: no text in it (empty file, or a scan with no text layer)")
    return doc


def corpus_files(root: Path) -> list[Path]:
    """Every file under root that a loader understands, in a stable order; hidden files skipped."""
    if root.exists() and not root.is_dir():
        raise LoadError(f"corpus folder {root} is a file; pass --corpus the folder that holds "
                        "the documents")
    if not root.is_dir():
        raise LoadError(f"corpus folder {root} does not exist; create it and put "
                        ".txt/.md/.html/.pdf files in it, or pass --corpus")
    try:
        return sorted(p for p in _visible_files(root) if p.suffix.lower() in LOADERS)
    except OSError as err:
        raise LoadError(f"cannot read the corpus folder {root} ({err.strerror}: {err.filename}); "
                        "check its permissions") from err


def _visible_files(root: Path) -> Iterator[Path]:
    """Every file under root but hidden ones (a name or folder starting with ".")."""
    return (p for p in root.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts))


def unread_files(root: Path) -> list[str]:
    """Files under root of a kind no loader reads (a .docx, say), but the corpus's own settings
    and glossary, which are not documents."""
    own = {CORPUS_CONFIG, GLOSSARY_FILE}
    return sorted(name for p in _visible_files(root) if p.suffix.lower() not in LOADERS
                  and (name := p.relative_to(root).as_posix()) not in own)


def load_corpus(root: Path, max_mb: float = 50.0) -> tuple[list[Document], list[str]]:
    """Load what is good, report what is not: one bad file never stops the rest."""
    docs, problems = [], []
    for path in corpus_files(root):
        try:
            docs.append(load(path, root, max_mb))
        except LoadError as err:
            log.error("skipped %s", err)
            problems.append(str(err))
    return docs, problems
