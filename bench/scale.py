"""Scale benchmark: exact (Flat) vs HNSW search, and BM25, on a synthetic corpus of 100k+ chunks.

Re-embedding 100k chunks would take hours on 2 cores, so the corpus is a multiple of a real index
(by default the one bench/retrieval_pydocs.py leaves in /tmp/pydocs-bench/index): copy j of
chunk i gets chunk i's vector plus small Gaussian noise, renormalized, and chunk i's text. The
embedder's throughput is measured separately on a sample of real chunks.

    python -m bench.scale [--index /tmp/pydocs-bench/index] [--target 110000]

Prints build time, query latency p50/p95 (dense search alone, and the full hybrid query with
BM25), HNSW recall@10 against exact search, disk size and process memory (RSS).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from chatbot import index as index_mod
from chatbot.config import Settings
from chatbot.embedding import MiniLMEmbedder
from chatbot.retrieval import Retriever
from chatbot.stores import FaissStore

QUESTIONS = Path(__file__).resolve().parent / "data" / "pydocs_questions.jsonl"


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def synthetic(vectors: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The real vectors first, then noisy unit-length copies until there are n."""
    reps = -(-n // len(vectors))
    out = np.tile(vectors, (reps, 1))[:n].copy()
    extra = out[len(vectors):]
    extra += rng.normal(0, noise, extra.shape).astype("float32")
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return out


def timed_queries(fn, queries) -> list[float]:
    fn(queries[0])  # warm-up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    return times


@dataclasses.dataclass(frozen=True)
class KnownVectors:
    """An Embedder that looks the questions' vectors up: retrieval timed without embedding."""
    id: str
    dim: int
    table: dict[str, np.ndarray]

    def embed(self, texts, progress=False) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def file_mb(index: faiss.Index) -> float:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as tmp:
        faiss.write_index(index, tmp.name)
        return Path(tmp.name).stat().st_size / 1e6


def recall_at_10(approx: faiss.Index, exact_ids: np.ndarray, qvecs: np.ndarray, n_real: int) -> tuple[float, float]:
    """Share of the exact top 10 that HNSW finds: as chunk ids, and as the real chunks they copy
    (noisy copies of one chunk are near-ties whose order HNSW cannot be expected to keep)."""
    _, ids = approx.search(qvecs, 10)
    strict = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact_ids)])
    base = np.mean([len({x % n_real for x in a} & {x % n_real for x in e}) / len({x % n_real for x in e})
                    for a, e in zip(ids, exact_ids)])
    return float(strict), float(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, default=Path("/tmp/pydocs-bench/index"))
    parser.add_argument("--target", type=int, default=110_000, help="chunks in the largest corpus")
    parser.add_argument("--noise", type=float, default=0.015, help="std of the noise per dimension")
    parser.add_argument("--sample", type=int, default=256, help="chunks embedded to time the embedder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    rng = np.random.default_rng(0)

    base = index_mod.load(args.index)
    n_real = len(base.chunks)
    vectors = base.vectors(list(range(n_real)))
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]

    sample = random.Random(0).sample(base.chunks, min(args.sample, n_real))
    embedder = MiniLMEmbedder()
    embedder.embed(["warm-up"])
    t0 = time.perf_counter()
    embedder.embed([c.embed_text for c in sample])
    throughput = len(sample) / (time.perf_counter() - t0)
    embed_ms = timed_queries(lambda q: embedder.embed([q]), questions[:30])
    qvecs = embedder.embed(questions)
    # From here on the retriever gets the question vectors from this table, so the latencies below
    # are retrieval alone; embedding the question adds the p50 printed here.
    known = KnownVectors(embedder.id, embedder.dim, dict(zip(questions, qvecs)))

    print(f"base index: {n_real} real chunks from {args.index}; machine: {psutil.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} (other jobs share the cores: latencies are upper bounds)")
    print(f"embedding throughput: {throughput:.1f} chunks/s (sample of {len(sample)} real chunks, batch 32); "
          f"one query: p50 {pct(embed_ms, 50):.1f} ms")
    print(f"HNSW: M={settings.hnsw_m}, efConstruction={settings.hnsw_ef_construction}, "
          f"efSearch={settings.hnsw_ef_search}; noise std {args.noise}/dim\n")

    rows = []
    for n in sorted({n_real, args.target // 2, args.target}):
        X = synthetic(vectors, n, args.noise, rng)
        # each copy of a page counts as a page of its own, with a noisy copy of the title vector
        chunks = [base.chunks[i % n_real] if i < n_real else dataclasses.replace(
            base.chunks[i % n_real], id=f"{base.chunks[i % n_real].id}~{i // n_real}",
            source=f"{base.chunks[i % n_real].source}~{i // n_real}") for i in range(n)]
        titles = synthetic(np.asarray(base.title_vectors), len({c.source for c in chunks}), args.noise, rng)
        t0 = time.perf_counter()
        bm25 = index_mod.lexical_index(chunks)
        bm25_s = time.perf_counter() - t0
        exact_ids = None
        for kind in ("flat", "hnsw"):
            t0 = time.perf_counter()
            fidx = index_mod.make_faiss(X, settings.replace(hnsw_min_chunks=n if kind == "hnsw" else n + 1))
            build_s = time.perf_counter() - t0
            if kind == "flat":
                exact_ids = fidx.search(qvecs, 10)[1]
                recalls = {}
            else:
                recalls = {}
                for ef in (32, 64, 128, 256):
                    fidx.hnsw.efSearch = ef
                    ms = timed_queries(lambda v: fidx.search(v[None, :], 50), qvecs)
                    recalls[ef] = (*recall_at_10(fidx, exact_ids, qvecs, n_real), pct(ms, 50))
                fidx.hnsw.efSearch = settings.hnsw_ef_search
            index = index_mod.Index(FaissStore(fidx, [c.source for c in chunks]), chunks, {},
                                    title_vectors=titles)
            index.__dict__["bm25"] = bm25  # the cached_property, as a loaded index would have it
            dense_ms = timed_queries(lambda v: fidx.search(v[None, :], 50), qvecs)
            hybrid = Retriever.from_settings(index, settings, known)
            hybrid_ms = timed_queries(lambda q: hybrid.search(q, 10), questions)
            rows.append({"n": n, "kind": kind, "build_s": build_s, "bm25_s": bm25_s,
                         "dense_p50": pct(dense_ms, 50), "dense_p95": pct(dense_ms, 95),
                         "hybrid_p50": pct(hybrid_ms, 50), "hybrid_p95": pct(hybrid_ms, 95),
                         "recall": recalls.get(settings.hnsw_ef_search, (1.0, 1.0)), "recalls": recalls,
                         "disk_mb": file_mb(fidx), "rss_mb": rss_mb()})
            r = rows[-1]
            print(f"  done {n} {kind}: build {build_s:.1f} s, dense p50 {r['dense_p50']:.2f} ms, "
                  f"hybrid p50 {r['hybrid_p50']:.1f} ms", flush=True)
            del index, hybrid, fidx

    print("\n| chunks | index | build s | dense search p50/p95 ms | hybrid query p50/p95 ms | "
          "recall@10 ids / real chunks | FAISS MB | RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['kind']} | {r['build_s']:.1f} | {r['dense_p50']:.2f} / {r['dense_p95']:.2f} | "
              f"{r['hybrid_p50']:.1f} / {r['hybrid_p95']:.1f} | {r['recall'][0]:.3f} / {r['recall'][1]:.3f} | "
              f"{r['disk_mb']:.0f} | "
              f"{r['rss_mb']:.0f} |")
    print("\nBM25 build (tokenize + index) per size: "
          + ", ".join(f"{r['n']:,}: {r['bm25_s']:.1f} s" for r in rows if r["kind"] == "flat"))
    print("HNSW by efSearch (recall@10 ids / real chunks, dense p50 ms):")
    for r in (r for r in rows if r["kind"] == "hnsw"):
        print(f"  {r['n']:,}: " + "; ".join(f"ef {ef}: {a:.3f} / {b:.3f}, {ms:.2f} ms"
                                            for ef, (a, b, ms) in r["recalls"].items()))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("hybrid query = the default retrieval: dense top-50 + BM25 over all chunks, blended with "
          "the title similarity, diversified (top 10); embedding the question not included (see above)")


if __name__ == "__main__":
    main()
