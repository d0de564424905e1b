"""The vector index on disk: FAISS inner-product index + a JSON manifest, written atomically.

The manifest records what the index was built from (embedding model, chunking settings, a
content hash per file), so a changed corpus or model is noticed and the index rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from chatbot import models
from chatbot.chunking import Chunk, chunk
from chatbot.config import Settings
from chatbot.documents import LoadError, corpus_files, load_corpus

log = logging.getLogger(__name__)

FORMAT = 1
FAISS_FILE, MANIFEST_FILE = "index.faiss", "manifest.json"


class IndexError_(RuntimeError):
    """The index on disk is missing, broken or stale; the message says which and why."""


@dataclass
class Index:
    faiss: faiss.Index
    chunks: list[Chunk]
    manifest: dict

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.faiss.search(vectors, min(k, len(self.chunks)))

    @property
    def sources(self) -> list[str]:
        return sorted(self.manifest["files"])


def file_hashes(corpus_dir: Path) -> dict[str, str]:
    return {p.relative_to(corpus_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in corpus_files(corpus_dir)}


def _recipe(settings: Settings) -> dict:
    """Everything that, if changed, makes old vectors wrong."""
    return {"format": FORMAT, "embedder": models.embedder_id(),
            "chunking": {"chunk_chars": settings.chunk_chars,
                         "overlap": settings.chunk_overlap_sentences}}


def build(settings: Settings) -> Index:
    t0 = time.perf_counter()
    docs, problems = load_corpus(settings.corpus_dir, settings.max_file_mb)
    if not docs:
        raise LoadError(f"no readable documents in {settings.corpus_dir}"
                        + (": " + "; ".join(problems) if problems else ""))
    chunks = [c for d in docs for c in chunk(d, settings.chunk_chars, settings.chunk_overlap_sentences)]
    log.info("Embedding %d chunks from %d documents", len(chunks), len(docs))
    vectors = models.embed([c.embed_text for c in chunks], progress=len(chunks) > 256)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    hashes = file_hashes(settings.corpus_dir)
    manifest = {**_recipe(settings), "dim": int(vectors.shape[1]), "chunk_count": len(chunks),
                "files": {d.source: hashes[d.source] for d in docs}, "skipped": problems,
                "seen": hashes,  # every file looked at, skipped ones too: fixing one triggers a rebuild
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.perf_counter() - t0, 2),
                "chunks": [dataclasses.asdict(c) for c in chunks]}
    return Index(index, chunks, manifest)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(index: Index, index_dir: Path) -> None:
    """FAISS file first, manifest (holding the FAISS file's hash) last: a crash in between is
    caught at load time as a hash mismatch, never read as a valid index."""
    index_dir.mkdir(parents=True, exist_ok=True)
    blob = faiss.serialize_index(index.faiss).tobytes()
    manifest = {**index.manifest, "faiss_sha256": hashlib.sha256(blob).hexdigest()}
    _atomic_write(index_dir / FAISS_FILE, blob)
    _atomic_write(index_dir / MANIFEST_FILE, json.dumps(manifest, ensure_ascii=False).encode())
    index.manifest = manifest


def load(index_dir: Path) -> Index:
    mpath, fpath = index_dir / MANIFEST_FILE, index_dir / FAISS_FILE
    if not mpath.exists() or not fpath.exists():
        raise IndexError_(f"no index in {index_dir}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        blob = fpath.read_bytes()
        if hashlib.sha256(blob).hexdigest() != manifest.get("faiss_sha256"):
            raise IndexError_(f"{fpath} does not match its manifest (an interrupted write?)")
        fidx = faiss.deserialize_index(np.frombuffer(blob, dtype="uint8"))
        chunks = [Chunk(**c) for c in manifest["chunks"]]
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        if isinstance(err, IndexError_):
            raise
        raise IndexError_(f"index in {index_dir} is unreadable ({err})") from err
    if fidx.ntotal != len(chunks):
        raise IndexError_(f"index in {index_dir} has {fidx.ntotal} vectors for {len(chunks)} chunks")
    return Index(fidx, chunks, manifest)


def staleness(index: Index, settings: Settings) -> str | None:
    """Why the index no longer matches the corpus and settings, or None if it does."""
    m = index.manifest
    for key, want in _recipe(settings).items():
        if m.get(key) != want:
            return f"{key} changed ({m.get(key)} -> {want})"
    now = file_hashes(settings.corpus_dir)
    before = m["seen"]
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(s for s in set(now) & set(before) if now[s] != before[s])
    parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
             for label, names in (("added", added), ("removed", removed), ("changed", changed)) if names]
    return "corpus " + "; ".join(parts) if parts else None


def ensure(settings: Settings) -> Index:
    """The index for the current corpus: loaded if fresh, otherwise (re)built and saved."""
    try:
        index = load(settings.index_dir)
        reason = staleness(index, settings)
        if reason is None:
            return index
        log.warning("Rebuilding the index: %s", reason)
    except IndexError_ as err:
        log.warning("Building the index: %s", err)
    index = build(settings)
    save(index, settings.index_dir)
    log.info("Index built: %d chunks from %d files in %.1f s -> %s", index.manifest["chunk_count"],
             len(index.manifest["files"]), index.manifest["build_seconds"], settings.index_dir)
    return index
