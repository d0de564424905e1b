"""The vector index on disk: a FAISS inner-product index + a JSON manifest, swapped in atomically.

The manifest records what the index was built from (embedding model, chunking settings, a
content hash per file), so a changed corpus or model is noticed. Ingest is incremental: every
file's chunks and vectors are cached under `cache/`, keyed by what they were made from, so only
new or changed files are re-chunked and re-embedded. Embedding runs in batches of
`embed_batch_chunks`, and a file that spans several batches leaves a partial cache entry after
each one, so an ingest killed halfway, even through one huge file, resumes from its last batch.
The FAISS file and the BM25 folder get new names on every save and the manifest naming them is
written last, so a crash at any point leaves the previous index intact and loadable.
BM25 is saved too: tokenizing every chunk again would add seconds (pydocs) to a minute (100k
chunks) to the first question after a start.

An index folder belongs to one corpus folder, recorded in three places (`owner.json`, its copy in
`cache/`, and the manifest): nothing is written into, or deleted from, a folder whose owner
cannot be shown to be the corpus at hand (docs/index-safety.md).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import bm25s
import faiss
import numpy as np
from tqdm import tqdm

from chatbot.chunking import RULES, Chunk, reader
from chatbot.config import Settings
from chatbot.documents import LOADERS, LoadError, corpus_files, unread_files
from chatbot.embedding import Embedder
from chatbot.stores import FaissStore, OwnerMismatch, PgVectorStore, VectorStore
from chatbot.stores import sync as database_sync
from chatbot.text import camel_names, terms

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets itself to DEBUG on import

FORMAT = 5  # 5: no instruction flags in chunks (flagged when retrieved: instructions.py)
MANIFEST_FILE, CACHE_DIR, OWNER_FILE = "manifest.json", "cache", "owner.json"
# Embedding speed assumed for estimates until a build has measured this machine's: all-MiniLM-L6-v2
# on 2 free cores, ~29 chunks/s for chunks of ~1,300 characters (256 tokens), 57/s for FAQ-sized
# ones (docs/index-safety.md); the lower figure, so that estimates do not promise too much.
DEFAULT_CHUNKS_PER_SECOND = 30.0
PROGRESS_MIN_CHUNKS = 256  # smaller updates take seconds: no progress bar


class IndexError_(RuntimeError):
    """The index on disk is missing, broken or stale; the message says which and why."""


class IndexWriteError(IndexError_):
    """The index folder cannot be written (read-only, no permission, disk full); nothing changed."""


@dataclass
class Index:
    store: VectorStore  # the chunk vectors, row i for chunks[i]
    chunks: list[Chunk]
    manifest: dict
    root: Path | None = None  # the folder it was loaded from or saved to
    title_vectors: np.ndarray | None = None  # one per document title, in order of first chunk
    stale: str | None = None  # why it no longer matches the corpus, when served anyway (ensure)

    @cached_property
    def document_frequency(self) -> Counter[str]:
        """How many documents use each word stem: saved with the index, since counting it took
        ~1 s at 14k chunks at every start; counted here for an index saved without it."""
        saved = self.manifest.get("document_frequency")
        return Counter(saved) if isinstance(saved, dict) else document_frequency(self.chunks)

    @cached_property
    def names(self) -> frozenset[str]:
        """The CamelCase names the documents write (`text.camel_names`), saved with the index as
        document_frequency is (found here, 0.25 s at 14k chunks, for an index saved without)."""
        saved = self.manifest.get("names")
        return frozenset(saved) if isinstance(saved, list) else corpus_names(self.chunks)

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
                log.warning("BM25 index %s is unusable (%s); building it from the chunks",
                            folder, err)
        return lexical_index(self.chunks)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.search(vectors, min(k, len(self.chunks)))

    def vectors(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of the given chunks (to score chunks that the dense search did not
        return)."""
        return self.store.vectors(ids)

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


def document_frequency(chunks: list[Chunk]) -> Counter[str]:
    """How many documents use each word stem (pipeline.common_stems reads it)."""
    stems: dict[str, set[str]] = {}
    for c in chunks:
        stems.setdefault(c.source, set()).update(terms(c.text))
    return Counter(stem for doc in stems.values() for stem in doc)


def corpus_names(chunks: list[Chunk]) -> frozenset[str]:
    """Every CamelCase name the chunks write (`text.camel_names`)."""
    return frozenset().union(*(camel_names(c.text) for c in chunks))


def lexical_index(chunks: list[Chunk]) -> bm25s.BM25:
    retriever = bm25s.BM25()
    retriever.index([terms(c.embed_text) or ["_"] for c in chunks], show_progress=False)
    return retriever


def file_hashes(corpus_dir: Path) -> dict[str, str]:
    return {p.relative_to(corpus_dir).as_posix(): _sha256_file(p) for p in corpus_files(corpus_dir)}


def _recipe(settings: Settings, embedder: Embedder) -> dict:
    """Everything that, if changed, makes old vectors wrong."""
    return {"format": FORMAT, "embedder": embedder.id,
            "chunking": {"chunk_chars": settings.chunk_chars,
                         "overlap": settings.chunk_overlap_sentences, "rules": RULES}}


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
    misses the cache. A file still being embedded has partial entries instead, one per batch
    (`<key>.<first chunk>.part.npy`), which `parts` reads back to resume."""

    def __init__(self, root: Path, recipe: dict):
        self.root = root
        self.salt = json.dumps(recipe, sort_keys=True)

    def key(self, source: str, digest: str) -> str:
        return hashlib.sha256(f"{self.salt}\0{source}\0{digest}".encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def _part(self, key: str, start: int) -> Path:
        return self.root / f"{key}.{start:09d}.part.npy"

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
            if not (np.isfinite(vectors).all() and np.isfinite(title).all()):
                raise ValueError("vectors that are not numbers")  # kept by an older version
            return chunks, vectors, title
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Embedding cache entry %s is unreadable (%s); embedding the file again",
                        path, err)
            return None

    def put(self, key: str, chunks: list[Chunk], vectors: np.ndarray, title: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        meta = json.dumps([dataclasses.asdict(c) for c in chunks], ensure_ascii=False).encode()
        buf = io.BytesIO()
        np.savez(buf, vectors=vectors, title=title, chunks=np.frombuffer(meta, dtype="uint8"))
        _atomic_write(self._path(key), buf.getvalue())
        for part in self.root.glob(f"{key}.*.part.npy"):
            part.unlink(missing_ok=True)

    def put_part(self, key: str, start: int, vectors: np.ndarray) -> None:
        """Vectors of chunks start, start + 1, ... of a file not finished yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, vectors)
        _atomic_write(self._part(key, start), buf.getvalue())

    def parts(self, key: str, count: int) -> list[np.ndarray]:
        """The vectors of the first chunks of a file (of `count`) saved by an unfinished ingest,
        in order; a gap or an unreadable part ends the run, and the rest is embedded again."""
        done: list[np.ndarray] = []
        n = 0
        while n < count and (path := self._part(key, n)).exists():
            try:
                vectors = np.load(path)
            except (OSError, ValueError) as err:
                log.warning("Partial cache entry %s is unreadable (%s); embedding from there",
                            path, err)
                break
            if vectors.ndim != 2 or not 0 < len(vectors) <= count - n \
                    or not np.isfinite(vectors).all():
                break
            done.append(vectors)
            n += len(vectors)
        return done

    def keep_only(self, keys: set[str]) -> None:
        """Drop entries (and partial entries, and leftovers of killed writes) of files that
        changed or left the corpus."""
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if path.name != OWNER_FILE and path.name.split(".")[0] not in keys:
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


@dataclass
class _Pending:
    """A new or changed file to embed, with the vectors of its first chunks if an earlier ingest
    got that far (partial cache entries)."""
    source: str
    key: str
    chunks: list[Chunk]
    done: list[np.ndarray] = field(default_factory=list)

    @property
    def resume_at(self) -> int:
        return sum(len(v) for v in self.done)

    def text(self, i: int) -> str:
        """What to embed at position i: chunk i, and after the last chunk the document title."""
        return self.chunks[i].embed_text if i < len(self.chunks) else self.chunks[0].doc_title


@dataclass
class Plan:
    """What bringing the index up to date takes: the files whose cache entries are ready, the
    files to embed (read and chunked already) and the files that could not be read."""
    settings: Settings
    embedder: Embedder
    recipe: dict
    cache: EmbeddingCache
    hashes: dict[str, str]  # every file looked at, in corpus order
    keys: dict[str, str]
    ready: dict[str, tuple[list[Chunk], np.ndarray, np.ndarray]]
    pending: list[_Pending]
    problems: list[str]

    @property
    def todo_chunks(self) -> int:
        """Chunks still to embed (those in partial entries of an unfinished ingest are done)."""
        return sum(len(p.chunks) - p.resume_at for p in self.pending)


def plan(settings: Settings, embedder: Embedder) -> Plan:
    """Read the corpus: cached files are ready, the others are loaded and chunked (seconds for a
    20 MB file; many files in worker processes); bad files are logged by name with the reason,
    and skipped."""
    recipe = _recipe(settings, embedder)
    cache = EmbeddingCache(settings.index_dir / CACHE_DIR, recipe)
    work = Plan(settings, embedder, recipe, cache, {}, {}, {}, [], [])
    root = settings.corpus_dir
    todo = []
    for path in corpus_files(root):
        source = path.relative_to(root).as_posix()
        try:
            work.hashes[source] = _sha256_file(path)
        except OSError as err:
            work.problems.append(f"{source}: cannot read ({err.strerror})")
            log.error("skipped %s", work.problems[-1])
            continue
        work.keys[source] = key = cache.key(source, work.hashes[source])
        if (entry := cache.get(key)) is not None:
            work.ready[source] = entry
        else:
            todo.append((source, path))
    if todo and (unread := unread_files(root)):  # said when something is read anyway
        log.warning("Not read, of a kind it cannot read (%s only): %s%s",
                    ", ".join(sorted(LOADERS)), ", ".join(unread[:5]),
                    f" and {len(unread) - 5} more" if len(unread) > 5 else "")
    with reader(len(todo), settings) as read_all:
        results = read_all([path for _, path in todo], root)
        for (source, _), chunks in tqdm(zip(todo, results), total=len(todo), unit="file",
                                        desc="reading", disable=len(todo) < 100):
            if isinstance(chunks, str):
                log.error("skipped %s", chunks)
                work.problems.append(chunks)
            elif not chunks:
                work.problems.append(f"{source}: only headings, no text to index")
                log.error("skipped %s", work.problems[-1])
            else:
                key = work.keys[source]
                work.pending.append(_Pending(source, key, chunks, cache.parts(key, len(chunks))))
    return work


def _embed(work: Plan) -> tuple[int, float]:
    """Embed what `work` still needs (each file's chunks, then its title) in batches of
    embed_batch_chunks that run across file boundaries. A finished file is cached whole; an
    unfinished one gets a partial entry per batch, so a kill loses one batch at most. The
    progress bar moves once per batch. Returns the chunks embedded and the seconds it took."""
    batch_size = work.settings.embed_batch_chunks
    queue = [(n, i) for n, p in enumerate(work.pending)
             for i in range(p.resume_at, len(p.chunks) + 1)]  # (file, chunk or title)
    total = work.todo_chunks
    if not total:
        return 0, 0.0
    resumed = [f"{p.source} at chunk {p.resume_at + 1} of {len(p.chunks)}"
               for p in work.pending if p.done]
    named = (f": {', '.join(p.source for p in work.pending)}" if len(work.pending) <= 5
             else "")  # which ones, where a person could check
    log.info("Embedding %s from %s%s%s", _count(total, "chunk"),
             _count(len(work.pending), "new or changed file"), named,
             f" (resuming {', '.join(resumed)})" if resumed else "")
    t0 = time.perf_counter()
    with tqdm(total=total, unit="chunk", desc="embedding",
              disable=total < PROGRESS_MIN_CHUNKS) as bar:
        for start in range(0, len(queue), batch_size):
            batch = queue[start:start + batch_size]
            vectors = work.embedder.embed([work.pending[n].text(i) for n, i in batch])
            if not np.isfinite(vectors).all():  # never cached, never indexed: unfindable text
                n = batch[int(np.argmax(~np.isfinite(vectors).all(axis=1)))][0]
                raise IndexError_(f"the embedder returned vectors that are not numbers for "
                                  f"{work.pending[n].source}; its model files may be damaged: "
                                  f"delete {work.settings.cache_dir / 'models'}/minilm-* and run "
                                  "ingest again (the last good index is unchanged)")
            offset = 0
            for n, group in itertools.groupby(batch, key=lambda item: item[0]):
                p, first = work.pending[n], next(group)[1]
                count = 1 + sum(1 for _ in group)
                own, offset = vectors[offset:offset + count], offset + count
                if first + count <= len(p.chunks):  # the file goes on in the next batch
                    work.cache.put_part(p.key, first, own)
                    p.done.append(own)
                    continue
                chunk_vectors = np.concatenate([*p.done, own[:-1]])
                work.cache.put(p.key, p.chunks, chunk_vectors, own[-1])
                work.ready[p.source] = (p.chunks, chunk_vectors, own[-1])
                p.done = []
            bar.update(sum(i < len(work.pending[n].chunks) for n, i in batch))  # not titles
    return total, time.perf_counter() - t0


def _assemble(work: Plan, embedded: int, embed_seconds: float, t0: float) -> Index:
    """The index of everything ready, in corpus order, so builds are reproducible."""
    sources = [s for s in work.hashes if s in work.ready]
    chunks = [c for s in sources for c in work.ready[s][0]]
    vectors = np.concatenate([work.ready[s][1] for s in sources])
    # In memory until saved, whatever the store: `save` moves the vectors where they are kept.
    index = FaissStore(make_faiss(vectors, work.settings), [c.source for c in chunks])
    manifest = {**work.recipe, "corpus_dir": _corpus_id(work.settings.corpus_dir),
                "dim": int(vectors.shape[1]), "chunk_count": len(chunks),
                "vector_store": work.settings.vector_store,
                "index_type": index.stats()["index_type"],
                "files": {s: work.hashes[s] for s in sources}, "skipped": work.problems,
                # every file looked at, skipped ones too: fixing one triggers a rebuild
                "seen": work.hashes,
                "cache_keys": sorted(work.keys[s] for s in sources),
                "source_keys": {s: work.keys[s] for s in sources},  # what each file's rows are
                "embedded_chunks": embedded,  # how many were new this time (the rest were cached)
                "embed_seconds": round(embed_seconds, 2),  # to estimate the next update's time
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.perf_counter() - t0, 2),
                "document_frequency": dict(document_frequency(chunks)),
                "names": sorted(corpus_names(chunks)),
                "chunks": [c.to_dict() for c in chunks]}
    titles = np.stack([work.ready[s][2] for s in sources])
    return Index(index, chunks, manifest, title_vectors=titles)


def _build(work: Plan, t0: float) -> Index:
    if not work.ready and not work.pending:  # before anything is written: no folder left behind
        raise LoadError(f"no readable documents in {work.settings.corpus_dir}"
                        + (": " + "; ".join(work.problems) if work.problems else "")
                        + f"; add {', '.join(sorted(LOADERS))} files")
    with _writing(work.settings.index_dir):
        _claim(work.settings.index_dir, work.settings.corpus_dir)
        embedded, seconds = _embed(work)
    return _assemble(work, embedded, seconds, t0)


def build(settings: Settings, embedder: Embedder) -> Index:
    """The index for the corpus, re-using cached chunks and vectors of files that did not change.
    Writes only cache entries, into a folder that is new or this corpus's; `save` writes the
    index."""
    t0 = time.perf_counter()
    check_owner(settings.index_dir, settings.corpus_dir)
    return _build(plan(settings, embedder), t0)


# -- ownership: an index folder belongs to one corpus ---------------------------------------------

def _corpus_id(corpus_dir: Path) -> str:
    return str(corpus_dir.resolve())


def _recorded_owner(path: Path) -> str | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8")).get("corpus_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) and owner else None


def owner(index_dir: Path) -> str | None:
    """The corpus folder an index folder belongs to, from the first readable of its records:
    the owner file (written before anything else in the folder), its copy in the cache, then the
    manifest. None when none of them can be read."""
    records = (index_dir / OWNER_FILE, index_dir / CACHE_DIR / OWNER_FILE,
               index_dir / MANIFEST_FILE)
    return next((o for path in records if (o := _recorded_owner(path))), None)


def check_owner(index_dir: Path, corpus_dir: Path) -> None:
    """Refuse (IndexError_) to write into an index folder unless it is new, empty, or shown to
    belong to this corpus: a damaged manifest must never let one corpus overwrite another's
    index."""
    corpus = _corpus_id(corpus_dir)
    recorded = owner(index_dir)
    force = f"`python -m chatbot ingest --force --corpus {corpus_dir} --index {index_dir}`"
    if recorded is not None and recorded != corpus:
        raise IndexError_(f"{index_dir} holds the index of {recorded}, not of {corpus}; pass "
                          f"--corpus {recorded}, or another --index, or replace that index with "
                          f"{force}")
    if recorded is None and index_dir.exists():
        if not index_dir.is_dir():
            raise IndexError_(f"--index {index_dir} is a file, not a folder; pass a folder for the "
                              "index")
        # The repository ships index/README.md (what the folder is for): that is not an index.
        if any(p.name != "README.md" for p in index_dir.iterdir()):
            raise IndexError_(f"{index_dir} is not empty but has no readable record of its "
                              f"corpus ({MANIFEST_FILE} and {OWNER_FILE} missing or damaged); pass "
                              f"another --index, or make it the index of {corpus_dir} with {force}")


def _claim(index_dir: Path, corpus_dir: Path) -> None:
    """Record the owner (in the folder and in its cache) before anything else is written there."""
    corpus = _corpus_id(corpus_dir)
    record = json.dumps({"corpus_dir": corpus, "note": "this index folder belongs to that corpus "
                         "folder; see docs/index-safety.md"}, indent=1).encode()
    for folder in (index_dir, index_dir / CACHE_DIR):
        folder.mkdir(parents=True, exist_ok=True)
        if _recorded_owner(folder / OWNER_FILE) != corpus:
            _atomic_write(folder / OWNER_FILE, record)


# What to do about an index folder that cannot be written; the old index stays as it was.
_WRITE_FIXES = {
    errno.EACCES: "give this user write permission there, or pass another --index",
    errno.EPERM: "give this user write permission there, or pass another --index",
    errno.EROFS: "it is on a read-only file system: pass --index a writable folder",
    errno.ENOSPC: "free some disk space there, or pass --index a folder on another disk",
    errno.EDQUOT: "your disk quota is used up: free some space, or pass another --index",
}


@contextmanager
def _writing(index_dir: Path) -> Iterator[None]:
    """Turn a read-only, forbidden or full index folder into one line naming it and the fix."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_FIXES:
            raise
        raise IndexWriteError(f"cannot write the index in {index_dir} ({os.strerror(err.errno)})"
                              f": {_WRITE_FIXES[err.errno]}; the previous index is unchanged"
                              ) from err


# -- saving and loading ---------------------------------------------------------------------------

def _save_file(index_dir: Path, stem: str, suffix: str, data: bytes) -> tuple[str, str]:
    """Write a new file named after its content hash; returns its name and hash."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}-{digest[:16]}{suffix}"
    _atomic_write(index_dir / name, data)
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


def collection_name(index_dir: Path) -> str:
    """The index's name in a database: its folder, so app processes that share the folder share
    the collection, and indexes in other folders keep theirs apart."""
    return str(index_dir.resolve())


def _save_to_database(index: Index, index_dir: Path, database_url: str, force: bool) -> dict:
    """Sync the database's collection to this index (by document), then point the index at it."""
    if not database_url:
        raise IndexError_("vector_store is pgvector but no database_url is set; set "
                          "CHATBOT_DATABASE_URL (postgresql://...)")
    m, collection = index.manifest, collection_name(index_dir)
    try:
        changed = database_sync(database_url, collection, m["corpus_dir"], m["embedder"],
                                index.chunks, index.vectors(list(range(len(index.chunks)))),
                                m["source_keys"], force=force)
    except OwnerMismatch as err:
        raise IndexError_(f"the database's collection {collection} holds the index of "
                          f"{err.args[0]}, not of {m['corpus_dir']}; pass another --index, or "
                          "replace it with `python -m chatbot ingest --force`") from None
    store = PgVectorStore(database_url, collection, [c.id for c in index.chunks], m["dim"])
    log.info("Database collection %s: %s", collection, changed)
    index.store = store
    return {"pg_collection": collection, "pg_generation": store.generation(),
            "index_type": store.stats()["index_type"]}


def save(index: Index, index_dir: Path, database_url: str = "", force: bool = False) -> None:
    """New FAISS (or database rows), title-vector and BM25 files under new names first, the
    manifest naming them (with their hashes) last, then clean-up: a crash or a full disk before
    the manifest is replaced leaves the old index in force. Only into a folder that is new or
    this corpus's own (and, with pgvector, a collection that is new or this corpus's own)."""
    corpus_dir = Path(index.manifest["corpus_dir"])
    check_owner(index_dir, corpus_dir)
    with _writing(index_dir):
        _claim(index_dir, corpus_dir)
        buf = io.BytesIO()
        np.save(buf, index.title_vectors)
        if index.manifest.get("vector_store") == "pgvector":
            where = _save_to_database(index, index_dir, database_url, force)
            faiss_name = ""
        else:
            faiss_name, faiss_digest = _save_file(
                index_dir, "index", ".faiss", faiss.serialize_index(index.store.index).tobytes())
            where = {"faiss_file": faiss_name, "faiss_sha256": faiss_digest}
        titles_name, titles_digest = _save_file(index_dir, "titles", ".npy", buf.getvalue())
        bm25_name, bm25_digest = _save_bm25(index.bm25, index_dir)
        manifest = {**index.manifest, **where,
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
                          "(an interrupted copy or a disk error?); "
                          "rebuild with `python -m chatbot ingest`")
    return path


def _database_store(index_dir: Path, manifest: dict, chunks: list[Chunk], database_url: str,
                    ef_search: int) -> PgVectorStore:
    """The collection the manifest names, after checking it is the version the manifest saw."""
    if not database_url:
        raise IndexError_(f"the index in {index_dir} keeps its vectors in PostgreSQL; set "
                          "CHATBOT_DATABASE_URL (postgresql://...) or CHATBOT_VECTOR_STORE=faiss")
    store = PgVectorStore(database_url, manifest["pg_collection"], [c.id for c in chunks],
                          manifest["dim"], ef_search)
    if store.generation() != manifest["pg_generation"]:
        raise IndexError_(f"the database's collection {manifest['pg_collection']} is not the one "
                          f"the index in {index_dir} was saved with (changed or dropped since)")
    return store


def load(index_dir: Path, database_url: str = "", ef_search: int = 256) -> Index:
    """Read the index memory-mapped: the hash check streams the file once through the page cache,
    and the mapping then shares those pages instead of copying the vectors into the heap. An
    index whose vectors are in PostgreSQL connects to `database_url` instead."""
    mpath = index_dir / MANIFEST_FILE
    if not mpath.exists():
        raise IndexError_(f"no index in {index_dir}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        in_database = manifest.get("vector_store") == "pgvector"
        if manifest.get("format") != FORMAT or not ("pg_collection" if in_database
                                                      else "faiss_file") in manifest:
            raise IndexError_(f"index in {index_dir} has an older format "
                              f"({manifest.get('format')})")
        tpath = _checked(index_dir, manifest, "titles")
        titles = np.load(tpath, mmap_mode="r")
        chunks = [Chunk(**c) for c in manifest["chunks"]]
        if in_database:
            store: VectorStore = _database_store(index_dir, manifest, chunks, database_url,
                                                 ef_search)
        else:
            fidx = faiss.read_index(str(_checked(index_dir, manifest, "faiss")), faiss.IO_FLAG_MMAP)
            store = FaissStore(fidx, [c.source for c in chunks])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        if isinstance(err, IndexError_):
            raise
        raise IndexError_(f"index in {index_dir} is unreadable ({err})") from err
    vectors = store.stats()["vectors"]
    if vectors != len(chunks) or len(titles) != len({c.source for c in chunks}):
        raise IndexError_(f"index in {index_dir} has {vectors} vectors and {len(titles)} titles "
                          f"for {len(chunks)} chunks; rebuild with `python -m chatbot ingest`")
    return Index(store, chunks, manifest, index_dir, titles)


def staleness(index: Index, settings: Settings, embedder: Embedder) -> str | None:
    """Why the index no longer matches the corpus and settings, or None if it does."""
    m = index.manifest
    for key, want in _recipe(settings, embedder).items():
        if m.get(key) != want:
            return f"{key} changed ({m.get(key)} -> {want})"
    if m.get("vector_store", "faiss") != settings.vector_store:
        return f"vector store changed ({m.get('vector_store', 'faiss')} -> {settings.vector_store})"
    if "bm25_dir" not in m:
        return "no saved BM25 index"
    now = file_hashes(settings.corpus_dir)
    before = m["seen"]
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(s for s in set(now) & set(before) if now[s] != before[s])
    parts = [f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
             for label, names in (("added", added), ("removed", removed), ("changed", changed))
             if names]
    return "corpus " + "; ".join(parts) if parts else None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    return f"{max(seconds, 1):.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _chunks_per_second(manifest: dict) -> float:
    """This machine's embedding speed as the last build measured it, if it embedded enough."""
    embedded, seconds = manifest.get("embedded_chunks", 0), manifest.get("embed_seconds", 0)
    return embedded / seconds if embedded >= 200 and seconds > 0 else DEFAULT_CHUNKS_PER_SECOND


def ensure(settings: Settings, embedder: Embedder, update_all: bool = False) -> Index:
    """The index for the current corpus: loaded if fresh, otherwise updated (only new or changed
    files are embedded) and saved. Used by ask, chat and serve, so it never starts a long
    re-embed on its own: past auto_update_max_chunks (unless `update_all`), it warns with an
    estimate and returns the last good index, marked stale, for `ingest` to update. An update
    that cannot be saved (read-only or full disk) also leaves the stale index in service."""
    check_owner(settings.index_dir, settings.corpus_dir)
    try:
        index = load(settings.index_dir, settings.database_url, settings.hnsw_ef_search)
        if index.manifest.get("corpus_dir") != _corpus_id(settings.corpus_dir):
            raise IndexError_(f"the index in {settings.index_dir} is of "
                              f"{index.manifest.get('corpus_dir')} (an unfinished `ingest --force` "
                              "for this corpus?)")
    except IndexError_ as err:
        log.warning("Building the index: %s", err)
        return rebuild(settings, embedder)
    reason = staleness(index, settings, embedder)
    if reason is None:
        return index
    work = plan(settings, embedder)
    same_model = index.manifest.get("embedder") == work.recipe["embedder"]
    if not update_all and same_model and work.todo_chunks > settings.auto_update_max_chunks:
        seconds = work.todo_chunks / _chunks_per_second(index.manifest)
        log.warning("The index is out of date (%s): %d chunks to embed, about %s here, more "
                    "than auto_update_max_chunks (%d). Answering from the index built %s; run "
                    "`python -m chatbot ingest --corpus %s --index %s` to update it", reason,
                    work.todo_chunks, _duration(seconds), settings.auto_update_max_chunks,
                    index.manifest.get("built_at"), settings.corpus_dir, settings.index_dir)
        index.stale = reason
        return index
    log.warning("Updating the index: %s", reason)
    try:
        return _update(work, time.perf_counter())
    except IndexWriteError as err:
        log.warning("%s. Answering from the index built %s.", err, index.manifest.get("built_at"))
        index.stale = reason
        return index


def _update(work: Plan, t0: float, force: bool = False) -> Index:
    index = _build(work, t0)
    save(index, work.settings.index_dir, work.settings.database_url, force)
    m = index.manifest
    cached = m["chunk_count"] - m["embedded_chunks"]
    log.info("Indexed %s from %s (%d embedded, %d from the cache; %s) in %.1f s -> %s",
             _count(m["chunk_count"], "chunk"), _count(len(m["files"]), "file"),
             m["embedded_chunks"], cached, m["index_type"], m["build_seconds"],
             work.settings.index_dir)
    return index


def rebuild(settings: Settings, embedder: Embedder, force: bool = False) -> Index:
    """Build (embedding only new or changed files) and save, whatever the index on disk is now.
    Into a folder of another corpus, or of unknown ownership, only with `force`."""
    t0 = time.perf_counter()
    if force:
        with _writing(settings.index_dir):
            _claim(settings.index_dir, settings.corpus_dir)
    check_owner(settings.index_dir, settings.corpus_dir)
    return _update(plan(settings, embedder), t0, force)
