"""Where the chunk vectors live: FAISS files beside the index (default) or PostgreSQL + pgvector.

A `VectorStore` answers for the dense side of one index: the k chunks closest to a question
vector (optionally only from some documents), the stored vectors of given chunks, and what it
holds. Chunks are named by their position in the index's chunk list (the manifest's order), so
the retriever, BM25 and the title vectors line up with either store.

PostgreSQL keeps one row per chunk (its metadata in columns, its vector in a pgvector column
with an HNSW index) in a table shared by any number of indexes ("collections") and app
processes. `PgVectorStore.sync` brings a collection up to date by document, in one transaction:
rows of removed or changed documents are deleted, rows of new or changed ones added, and the
collection's record (owner corpus, per-document keys, generation) replaced; a reader sees the
old collection or the new one, never a mix. The owner record keeps the rule of the index folder:
a collection of another corpus is never written without `force`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Collection, Protocol, Sequence

import faiss
import numpy as np

from chatbot.chunking import Chunk

log = logging.getLogger(__name__)


class VectorStore(Protocol):
    def search(self, vectors: np.ndarray, k: int, sources: Collection[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (len(vectors), k), best first: inner products (cosines of
        unit vectors) and chunk positions, -1 where fewer than k chunks qualify. `sources`
        limits the search to those documents."""

    def vectors(self, positions: Sequence[int]) -> np.ndarray:
        """The stored vectors of the chunks at these positions, in that order."""

    def stats(self) -> dict:
        """What the store holds: its kind, vector count, documents."""

    def sources(self) -> list[str]:
        """The documents it holds vectors of, sorted."""


class FaissStore:
    """A FAISS index in this process (memory-mapped from the index folder once saved)."""

    def __init__(self, index: faiss.Index, row_sources: Sequence[str]):
        self.index = index
        self.row_sources = np.asarray(row_sources, dtype=object)  # the document of each row

    def search(self, vectors, k, sources=None):
        k = min(k, self.index.ntotal)
        if sources is None:
            return self.index.search(vectors, k)
        rows = np.flatnonzero(np.isin(self.row_sources, list(sources))).astype("int64")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
        return self.index.search(vectors, k, params=params)

    def vectors(self, positions):
        return self.index.reconstruct_batch(np.asarray(positions, dtype="int64"))

    def stats(self):
        return {"kind": "faiss", "index_type": type(self.index).__name__,
                "vectors": int(self.index.ntotal), "documents": len(set(self.row_sources))}

    def sources(self):
        return sorted(set(self.row_sources))


# The chunk table's layout; a new layout gets a new table (a database keeps the old one unused).
# 2: no `flagged` column.
SCHEMA = 2


def chunk_table(dim: int) -> str:
    """One table per vector size: pgvector's HNSW index needs one dimension per column."""
    return f"chatbot_chunks_v{SCHEMA}_{int(dim)}"


class DatabaseError(RuntimeError):
    """PostgreSQL cannot be reached or refused; the message names the URL's host and the fix."""


def _vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in v) + "]"


class PgVectorStore:
    """One collection of chunk vectors in PostgreSQL + pgvector (HNSW, inner product)."""

    def __init__(self, url: str, collection: str, chunk_ids: Sequence[str], dim: int,
                 ef_search: int = 256):
        self.url, self.collection, self.dim = url, collection, dim
        self.table = chunk_table(dim)
        self.ids = list(chunk_ids)
        self.position = {cid: i for i, cid in enumerate(self.ids)}
        self.conn = connect(url)
        # HNSW candidates per query, as FAISS's efSearch; iterative scans keep k results when a
        # filter (this collection, some documents) drops most candidates of a shared table.
        self.conn.execute(f"SET hnsw.ef_search = {min(int(ef_search), 1000)}")
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")

    def search(self, vectors, k, sources=None):
        scores = np.full((len(vectors), k), -np.inf, dtype="float32")
        positions = np.full((len(vectors), k), -1, dtype="int64")
        where = "collection = %s" + (" AND source = ANY(%s)" if sources is not None else "")
        sql = (f"SELECT chunk_id, -(embedding <#> %s) FROM {self.table} WHERE {where} "
               "ORDER BY embedding <#> %s LIMIT %s")
        for row, vector in enumerate(np.asarray(vectors, dtype="float32")):
            params = [vector, self.collection, *([list(sources)] if sources is not None else []),
                      vector, k]
            found = self.conn.execute(sql, params).fetchall()
            found = [(self.position[cid], s) for cid, s in found if cid in self.position]
            for j, (pos, score) in enumerate(found):
                positions[row, j], scores[row, j] = pos, score
        return scores, positions

    def vectors(self, positions):
        wanted = [self.ids[p] for p in positions]
        rows = dict(self.conn.execute(
            f"SELECT chunk_id, embedding FROM {self.table} "
            "WHERE collection = %s AND chunk_id = ANY(%s)", [self.collection, wanted]).fetchall())
        return np.array([rows[cid].to_numpy() for cid in wanted], dtype="float32").reshape(
            len(wanted), self.dim)

    def stats(self):
        count, docs = self.conn.execute(
            f"SELECT count(*), count(DISTINCT source) FROM {self.table} WHERE collection = %s",
            [self.collection]).fetchone()
        return {"kind": "pgvector", "index_type": "HNSW (pgvector)", "vectors": int(count),
                "documents": int(docs), "collection": self.collection}

    def sources(self):
        return [s for (s,) in self.conn.execute(
            f"SELECT DISTINCT source FROM {self.table} WHERE collection = %s ORDER BY source",
            [self.collection]).fetchall()]

    def generation(self) -> str | None:
        row = self.conn.execute("SELECT generation FROM chatbot_collections WHERE name = %s",
                                [self.collection]).fetchone()
        return row[0] if row else None


def connect(url: str):
    """A connection (autocommit) with pgvector's extension and this module's tables in place."""
    import psycopg
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatabaseError(f"cannot connect to the database at {_redacted(url)} ({first}); "
                            "start PostgreSQL or fix CHATBOT_DATABASE_URL") from None
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    register_vector(conn)  # numpy arrays in and out
    conn.execute("CREATE TABLE IF NOT EXISTS chatbot_collections (name text PRIMARY KEY, "
                 "corpus_dir text NOT NULL, source_keys jsonb NOT NULL, generation text NOT NULL,"
                 " embedder text NOT NULL, dim int NOT NULL, updated_at timestamptz NOT NULL "
                 "DEFAULT now())")
    return conn


def _redacted(url: str) -> str:
    """The URL without its password, to show in a message."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':')[0]}:***@{tail}" if ":" in userinfo else url


def generation_of(source_keys: dict[str, str]) -> str:
    """A collection's version, from what it was made of: the same content, the same generation,
    so processes that sync the same corpus agree instead of taking turns."""
    return hashlib.sha256(json.dumps(source_keys, sort_keys=True).encode()).hexdigest()[:32]


def sync(url: str, collection: str, corpus: str, embedder: str, chunks: list[Chunk],
         vectors: np.ndarray, source_keys: dict[str, str], force: bool = False) -> dict:
    """Bring `collection` to exactly these chunks, by document, in one transaction; returns what
    changed. Raises OwnerMismatch (a ValueError naming both corpora) for a collection of another
    corpus unless `force`."""
    dim = int(vectors.shape[1])
    table = chunk_table(dim)
    conn = connect(url)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (collection text NOT NULL, "
                     "chunk_id text NOT NULL, source text NOT NULL, title text NOT NULL, "
                     "doc_title text NOT NULL, start_char int NOT NULL, end_char int NOT NULL, "
                     "page int, text text NOT NULL, "
                     f"embedding vector({dim}) NOT NULL, PRIMARY KEY (collection, chunk_id))")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} "
                     "USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_source ON {table} (collection, source)")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [collection])
            row = conn.execute("SELECT corpus_dir, source_keys, embedder FROM chatbot_collections"
                               " WHERE name = %s", [collection]).fetchone()
            if row and row[0] != corpus and not force:
                raise OwnerMismatch(row[0])
            before = row[1] if row and row[0] == corpus and row[2] == embedder else {}
            if before and not conn.execute(f"SELECT 1 FROM {table} WHERE collection = %s LIMIT 1",
                                           [collection]).fetchone():
                before = {}  # recorded in an older table layout (SCHEMA): fill this one anew
            if row and not before:  # another corpus (forced) or another model: start over
                conn.execute(f"DELETE FROM {table} WHERE collection = %s", [collection])
            gone = sorted(s for s in before if source_keys.get(s) != before[s])
            new = {s for s in source_keys if before.get(s) != source_keys[s]}
            if gone:
                conn.execute(f"DELETE FROM {table} WHERE collection = %s AND source = ANY(%s)",
                             [collection, gone])
            columns = ("collection, chunk_id, source, title, doc_title, start_char, end_char, "
                       "page, text, embedding")
            added = 0
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for c, v in zip(chunks, vectors):
                    if c.source in new:
                        copy.write_row((collection, c.id, c.source, c.title, c.doc_title,
                                        c.start, c.end, c.page, c.text,
                                        _vector_literal(v)))
                        added += 1
            conn.execute("INSERT INTO chatbot_collections (name, corpus_dir, source_keys, "
                         "generation, embedder, dim) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                         "(name) DO UPDATE SET corpus_dir = EXCLUDED.corpus_dir, source_keys = "
                         "EXCLUDED.source_keys, generation = EXCLUDED.generation, embedder = "
                         "EXCLUDED.embedder, dim = EXCLUDED.dim, updated_at = now()",
                         [collection, corpus, json.dumps(source_keys), generation_of(source_keys),
                          embedder, dim])
    finally:
        conn.close()
    return {"documents_removed": len(gone), "documents_added": len(new), "chunks_added": added}


class OwnerMismatch(ValueError):
    """The collection belongs to another corpus folder (named in `args[0]`)."""
