"""Reading corpus files into Documents. One loader per suffix; bad files raise LoadError with a reason."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the corpus folder, with forward slashes
    text: str
    title: str


class LoadError(Exception):
    """A file that cannot become a Document; the message says why and what to do."""


def _decode(raw: bytes, name: str) -> str:
    if b"\x00" in raw[:8192]:
        raise LoadError(f"{name}: looks binary (NUL bytes), not text; remove it or convert it to .txt")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # Most non-UTF-8 text in the wild is Windows-1252; keep it rather than lose the file.
        log.warning("%s is not UTF-8 (byte %d); read it as Windows-1252. Save it as UTF-8 to be sure.",
                    name, err.start)
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


LOADERS = {".txt": _load_text, ".md": _load_text, ".markdown": _load_text}


def load(path: Path, root: Path, max_mb: float = 50.0) -> Document:
    """Read one file; `root` makes the source name relative so citations survive moving the corpus."""
    source = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"{source}: unsupported file type {path.suffix!r}; supported: {sorted(LOADERS)}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise LoadError(f"{source}: cannot read ({err.strerror})") from err
    if size > max_mb * 1e6:
        raise LoadError(f"{source}: {size / 1e6:.0f} MB is over the {max_mb:.0f} MB limit; split it "
                        "or raise CHATBOT_MAX_FILE_MB")
    try:
        doc = loader(path, source)
    except OSError as err:
        raise LoadError(f"{source}: cannot read ({err.strerror})") from err
    if not doc.text.strip():
        raise LoadError(f"{source}: no text in it (empty file, or a scan with no text layer)")
    return doc


def corpus_files(root: Path) -> list[Path]:
    """Every file under root that a loader understands, in a stable order; hidden files skipped."""
    if not root.is_dir():
        raise LoadError(f"corpus folder {root} does not exist; create it and put .txt/.md files in it")
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in LOADERS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


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
