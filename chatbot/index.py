"""The vector index on disk: a FAISS inner-product index + a JSON manifest, swapped in atomically.

The manifest records what the index was built from (embedding model, chunking settings, a
content hash per file), so a changed corpus or model is noticed. Ingest is incremental: every
file's chunks and vectors are cached under `cache/`, keyed by what they were made from, so only
new or changed files are re-chunked and re-embedded, and an ingest killed halfway resumes where
it stopped. The FAISS file and the BM25 folder get new names on every save and the manifest
naming them is written last, so a crash at any point leaves the previous index intact and loadable.
BM25 is saved too: tokenizing every chunk again would add seconds (pydocs) to a minute (100k
chunks) to the first question after a start.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import bm25s
import faiss
import numpy as np
from tqdm import tqdm

from chatbot import documents, instructions, models
from chatbot.chunking import Chunk, chunk
from chatbot.config import Settings
from chatbot.documents import LoadError, corpus_files
from chatbot.text import terms

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets itself to DEBUG on import

FORMAT = 4  # 4: chunks carry the spans of sentences flagged as instructions (Chunk.flagged)
MANIFEST_FILE, CACHE_DIR = "manifest.json", "cache"
EMBED_BATCH_CHUNKS = 512  # chunks embedded per model call; a crash loses at most one batch


class IndexError_(RuntimeError):
    """The index on disk is missing, broken or stale; the message says which and why."""


@dataclass
class Index:
    faiss: faiss.Index
    chunks: list[Chunk]
    manifest: dict
    root: Path | None = None  # the folder it was loaded from or saved to
    title_vectors: np.ndarray | None = None  # one per document title, in order of first chunk

    @cached_property
    def document_frequency(self) -> Counter[str]:
        """How many documents use each word stem (computed when first asked: ~1 s at 14k chunks)."""
        stems: dict[str, set[str]] = {}
        for c in self.chunks:
            stems.setdefault(c.source, set()).update(terms(c.text))
        return Counter(stem for doc in stems.values() for stem in doc)

    @cached_property
    def title_rows(self) -> np.ndarray:
        """For every chunk, the row of its document's title in title_vectors."""
        rows: dict[str, int] = {}
        return np.array([rows.setdefault(c.source, len(rows)) for c in self.chunks], dtype="int64")

    @cached_property
    def bm25(self) -> bm25s.BM25:
        """The lexical index: the saved one (memory-mapped) if there is a good one, else built."""
        name = self.manifest.get("bm25_dir")
        if self.root is not None and name:
            folder = self.root / name
            try:
                if _sha256_dir(folder) != self.manifest.get("bm25_sha256"):
                    raise ValueError("checksum does not match the manifest")
                return bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
            except (OSError, ValueError) as err:
                log.warning("BM25 index %s is unusable (%s); building it from the chunks", folder, err)
        return lexical_index(self.chunks)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.faiss.search(vectors, min(k, len(self.chunks)))

    def vectors(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of the given chunks (to score chunks that the dense search did not return)."""
        return self.faiss.reconstruct_batch(np.asarray(ids, dtype="int64"))

    @property
    def sources(self) -> list[str]:
        return sorted(self.manifest["files"])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _sha256_dir(folder: Path) -> str:
    return hashlib.sha256("".join(f"{p.name}:{_sha256_file(p)}\n" for p in sorted(folder.iterdir()))
                          .encode()).hexdigest()


def lexical_index(chunks: list[Chunk]) -> bm25s.BM25:
    retriever = bm25s.BM25()
    retriever.index([terms(c.embed_text) or ["_"] for c in chunks], show_progress=False)
    return retriever


def file_hashes(corpus_dir: Path) -> dict[str, str]:
    return {p.relative_to(corpus_dir).as_posix(): _sha256_file(p) for p in corpus_files(corpus_dir)}


def _recipe(settings: Settings) -> dict:
    """Everything that, if changed, makes old vectors (or instruction flags) wrong."""
    return {"format": FORMAT, "embedder": models.embedder_id(),
            "chunking": {"chunk_chars": settings.chunk_chars,
                         "overlap": settings.chunk_overlap_sentences},
            "instructions": instructions.recipe(settings)}


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


class EmbeddingCache:
    """One file per corpus file: its chunks, their vectors and its title's vector, written
    atomically. The key hashes the recipe, the source name and the content, so any change simply
    misses the cache."""

    def __init__(self, root: Path, recipe: dict):
        self.root = root
        self.salt = json.dumps(recipe, sort_keys=True)

    def key(self, source: str, digest: str) -> str:
        return hashlib.sha256(f"{self.salt}\0{source}\0{digest}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, key: str) -> tuple[list[Chunk], np.ndarray, np.ndarray] | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                chunks = [Chunk(**c) for c in json.loads(data["chunks"].tobytes())]
                vectors, title = data["vectors"], data["title"]
            if len(vectors) != len(chunks):
                raise ValueError(f"{len(vectors)} vectors for {len(chunks)} chunks")
            return chunks, vectors, title
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Embedding cache entry %s is unreadable (%s); embedding the file again", path, err)
            return None

    def put(self, key: str, chunks: list[Chunk], vectors: np.ndarray, title: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        meta = json.dumps([dataclasses.asdict(c) for c in chunks], ensure_ascii=False).encode()
        buf = io.BytesIO()
        np.savez(buf, vectors=vectors, title=title, chunks=np.frombuffer(meta, dtype="uint8"))
        _atomic_write(self._path(key), buf.getvalue())

    def keep_only(self, keys: set[str]) -> None:
        """Drop entries of files that changed or left the corpus."""
        for path in self.root.glob("*.npz"):
            if path.stem not in keys:
                path.unlink(missing_ok=True)


def make_faiss(vectors: np.ndarray, settings: Settings) -> faiss.Index:
    """Exact search while it is fast enough; an HNSW graph (approximate) above hnsw_min_chunks,
    so query time stays flat as the corpus grows."""
    dim = vectors.shape[1]
    if len(vectors) >= settings.hnsw_min_chunks:
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search  # saved with the index
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(vectors, dtype="float32"))
    return index


def _embed_pending(pending: list[tuple[str, str, list[Chunk]]], cache: EmbeddingCache,
                   ready: dict[str, tuple[list[Chunk], np.ndarray, np.ndarray]]) -> int:
    """Embed new or changed files (chunks, then the document title) in batches of whole files,
    caching each file as soon as its batch is done. Returns the number of chunks embedded."""
    total = sum(len(chunks) for _, _, chunks in pending)
    if total:
        log.info("Embedding %d chunks from %d new or changed files", total, len(pending))
    with tqdm(total=total, unit="chunk", desc="embedding", disable=total < 256) as bar:
        start = 0
        while start < len(pending):
            end, size = start, 0
            while end < len(pending) and (size == 0 or size + len(pending[end][2]) <= EMBED_BATCH_CHUNKS):
                size += len(pending[end][2])
                end += 1
            batch = pending[start:end]
            vectors = models.embed([text for _, _, chunks in batch
                                    for text in [*(c.embed_text for c in chunks), chunks[0].doc_title]])
            offset = 0
            for source, key, chunks in batch:
                own, title = vectors[offset:offset + len(chunks)], vectors[offset + len(chunks)]
                offset += len(chunks) + 1
                cache.put(key, chunks, own, title)
                ready[source] = (chunks, own, title)
            bar.update(size)
            start = end
    return total


def build(settings: Settings) -> Index:
    """The index for the corpus, re-using cached chunks and vectors of files that did not change."""
    t0 = time.perf_counter()
    recipe = _recipe(settings)
    cache = EmbeddingCache(settings.index_dir / CACHE_DIR, recipe)
    root = settings.corpus_dir
    hashes: dict[str, str] = {}
    keys: dict[str, str] = {}
    ready: dict[str, tuple[list[Chunk], np.ndarray, np.ndarray]] = {}
    pending: list[tuple[str, str, list[Chunk]]] = []
    problems: list[str] = []
    paths = corpus_files(root)
    for path in tqdm(paths, unit="file", desc="reading", disable=len(paths) < 100):
        source = path.relative_to(root).as_posix()
        hashes[source] = _sha256_file(path)
        keys[source] = key = cache.key(source, hashes[source])
        if (entry := cache.get(key)) is not None:
            ready[source] = entry
            continue
        try:
            doc = documents.load(path, root, settings.max_file_mb)
        except LoadError as err:
            log.error("skipped %s", err)
            problems.append(str(err))
            continue
        chunks = instructions.flag_chunks(chunk(doc, settings.chunk_chars, settings.chunk_overlap_sentences),
                                          settings)
        if not chunks:
            problems.append(f"{source}: only headings, no text to index")
            log.error("skipped %s", problems[-1])
            continue
        pending.append((source, key, chunks))
    embedded = _embed_pending(pending, cache, ready)
    if not ready:
        raise LoadError(f"no readable documents in {root}"
                        + (": " + "; ".join(problems) if problems else ""))
    sources = [s for s in hashes if s in ready]  # corpus order, so builds are reproducible
    chunks = [c for s in sources for c in ready[s][0]]
    vectors = np.concatenate([ready[s][1] for s in sources])
    index = make_faiss(vectors, settings)
    manifest = {**recipe, "corpus_dir": str(root.resolve()), "dim": int(vectors.shape[1]),
                "chunk_count": len(chunks),
                "index_type": type(index).__name__,
                "files": {s: hashes[s] for s in sources}, "skipped": problems,
                "seen": hashes,  # every file looked at, skipped ones too: fixing one triggers a rebuild
                "cache_keys": sorted(keys[s] for s in sources),
                "embedded_chunks": embedded,  # how many were new this time (the rest came from cache)
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.perf_counter() - t0, 2),
                "chunks": [c.to_dict() for c in chunks]}
    return Index(index, chunks, manifest, title_vectors=np.stack([ready[s][2] for s in sources]))


def _save_file(index_dir: Path, stem: str, suffix: str, write: Callable[[str], None]) -> tuple[str, str]:
    """Write a new file via `write(path)`, named after its content hash; returns name and hash."""
    fd, tmp = tempfile.mkstemp(dir=index_dir, prefix=f".{stem}-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = _sha256_file(Path(tmp))
        name = f"{stem}-{digest[:16]}{suffix}"
        os.replace(tmp, index_dir / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return name, digest


def _save_bm25(bm25: bm25s.BM25, index_dir: Path) -> tuple[str, str]:
    tmp = Path(tempfile.mkdtemp(dir=index_dir, prefix=".bm25-"))
    try:
        bm25.save(str(tmp), show_progress=False)
        for path in tmp.iterdir():
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        digest = _sha256_dir(tmp)
        name = f"bm25-{digest[:16]}"
        if (index_dir / name).exists():  # same content saved before
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, index_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name, digest


def save(index: Index, index_dir: Path) -> None:
    """New FAISS, title-vector and BM25 files under new names first, the manifest naming them (with
    their hashes) last, then clean-up: a crash before the manifest is replaced leaves the old index
    in force."""
    index_dir.mkdir(parents=True, exist_ok=True)
    faiss_name, faiss_digest = _save_file(index_dir, "index", ".faiss",
                                          lambda path: faiss.write_index(index.faiss, path))
    titles_name, titles_digest = _save_file(index_dir, "titles", ".npy",
                                            lambda path: np.save(path, index.title_vectors))
    bm25_name, bm25_digest = _save_bm25(index.bm25, index_dir)
    manifest = {**index.manifest, "faiss_file": faiss_name, "faiss_sha256": faiss_digest,
                "titles_file": titles_name, "titles_sha256": titles_digest,
                "bm25_dir": bm25_name, "bm25_sha256": bm25_digest}
    _atomic_write(index_dir / MANIFEST_FILE, json.dumps(manifest, ensure_ascii=False).encode())
    index.manifest, index.root = manifest, index_dir
    for old in [*index_dir.glob("index-*.faiss"), *index_dir.glob("titles-*.npy")]:
        if old.name not in (faiss_name, titles_name):
            old.unlink(missing_ok=True)  # a reader that has it memory-mapped keeps its copy
    for old in index_dir.glob("bm25-*"):
        if old.name != bm25_name:
            shutil.rmtree(old, ignore_errors=True)
    if "cache_keys" in manifest:
        EmbeddingCache(index_dir / CACHE_DIR, {}).keep_only(set(manifest["cache_keys"]))


def _checked(index_dir: Path, manifest: dict, kind: str) -> Path:
    """The index file of this kind named in the manifest, after checking it is whole."""
    path = index_dir / manifest[f"{kind}_file"]
    if not path.is_file():
        raise IndexError_(f"{path} is missing; run `python -m chatbot ingest` to rebuild")
    if _sha256_file(path) != manifest[f"{kind}_sha256"]:
        raise IndexError_(f"{path} is corrupted: its checksum does not match the manifest "
                          "(an interrupted copy or a disk error?); rebuild with `python -m chatbot ingest`")
    return path


def load(index_dir: Path) -> Index:
    """Read the index memory-mapped: the hash check streams the file once through the page cache,
    and the mapping then shares those pages instead of copying the vectors into the heap."""
    mpath = index_dir / MANIFEST_FILE
    if not mpath.exists():
        raise IndexError_(f"no index in {index_dir}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or "faiss_file" not in manifest:
            raise IndexError_(f"index in {index_dir} has an older format ({manifest.get('format')})")
        fpath, tpath = _checked(index_dir, manifest, "faiss"), _checked(index_dir, manifest, "titles")
        fidx = faiss.read_index(str(fpath), faiss.IO_FLAG_MMAP)
        titles = np.load(tpath, mmap_mode="r")
        chunks = [Chunk(**c) for c in manifest["chunks"]]
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        if isinstance(err, IndexError_):
            raise
        raise IndexError_(f"index in {index_dir} is unreadable ({err})") from err
    if fidx.ntotal != len(chunks) or len(titles) != len({c.source for c in chunks}):
        raise IndexError_(f"index in {index_dir} has {fidx.ntotal} vectors and {len(titles)} titles "
                          f"for {len(chunks)} chunks; rebuild with `python -m chatbot ingest`")
    return Index(fidx, chunks, manifest, index_dir, titles)


def staleness(index: Index, settings: Settings) -> str | None:
    """Why the index no longer matches the corpus and settings, or None if it does."""
    m = index.manifest
    for key, want in _recipe(settings).items():
        if m.get(key) != want:
            return f"{key} changed ({m.get(key)} -> {want})"
    if "bm25_dir" not in m:
        return "no saved BM25 index"
    now = file_hashes(settings.corpus_dir)
    before = m["seen"]
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(s for s in set(now) & set(before) if now[s] != before[s])
    parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
             for label, names in (("added", added), ("removed", removed), ("changed", changed)) if names]
    return "corpus " + "; ".join(parts) if parts else None


def ensure(settings: Settings) -> Index:
    """The index for the current corpus: loaded if fresh, otherwise updated (only new or changed
    files are embedded) and saved."""
    try:
        index = load(settings.index_dir)
    except IndexError_ as err:
        log.warning("Building the index: %s", err)
    else:
        built_from, corpus = index.manifest.get("corpus_dir"), str(settings.corpus_dir.resolve())
        if built_from and built_from != corpus:
            # Rebuilding would silently throw away an index of another corpus (hours of embedding).
            raise IndexError_(f"{settings.index_dir} holds the index of {built_from}, not of {corpus}; "
                              f"pass --corpus {built_from}, or another --index, or run `python -m "
                              f"chatbot ingest --corpus {settings.corpus_dir} --index {settings.index_dir}`")
        reason = staleness(index, settings)
        if reason is None:
            return index
        log.warning("Updating the index: %s", reason)
    return rebuild(settings)


def rebuild(settings: Settings) -> Index:
    """Build (embedding only new or changed files) and save, whatever is on disk now."""
    index = build(settings)
    save(index, settings.index_dir)
    m = index.manifest
    log.info("Indexed %d chunks from %d files (%d embedded, the rest cached; %s) in %.1f s -> %s",
             m["chunk_count"], len(m["files"]), m["embedded_chunks"], m["index_type"],
             m["build_seconds"], settings.index_dir)
    return index
