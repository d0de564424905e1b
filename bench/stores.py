"""FAISS files vs PostgreSQL + pgvector on the same run: ingest, retrieval latency and quality,
and the FAQ dev set's answers.

    export CHATBOT_DATABASE_URL=$(python .ci/postgres.py start /tmp/pg)
    python -m bench.stores [--pydocs-index /path/to/a/built/pydocs/index]

FAQ: both stores are built from the seed FAQ with the real embedder, then every dev-set question
is answered (extractive) by both and the answers compared. Python docs: the vectors of an index
built before (`python -m bench.retrieval_pydocs` makes one) are written to each store as ingest
does after embedding (embedding is the same for both and measured in the README), then all
pydocs questions are retrieved from each with the default stages. Question vectors are computed
once, so the latencies are retrieval alone (BM25 + title scores + the store).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import faiss

from bench.retrieval_pydocs import QUESTION_SETS, evaluate, load_rows
from bench.scale import KnownVectors
from chatbot import index as index_mod
from chatbot.config import load_settings
from chatbot.embedding import MiniLMEmbedder
from chatbot.pipeline import Chatbot
from chatbot.retrieval import Retriever
from chatbot.stores import PgVectorStore, sync

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "tests" / "data" / "dev.jsonl"


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def faq(url: str, embedder: MiniLMEmbedder, work: Path) -> dict:
    rows = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    bots, out = {}, {}
    for store in ("faiss", "pgvector"):
        settings = load_settings(corpus_dir=ROOT / "corpus", index_dir=work / f"faq-{store}",
                                 generator="extractive", vector_store=store, database_url=url)
        t0 = time.perf_counter()
        index = index_mod.ensure(settings, embedder)
        out[f"{store}_ingest_s"] = round(time.perf_counter() - t0, 3)
        bots[store] = Chatbot(settings, index=index, embedder=embedder)
    turns = [r.get("turns") or [r["question"]] for r in rows]
    answers = {s: [bot.answer(t[-1], t[:-1]) for t in turns] for s, bot in bots.items()}
    same = sum((a.text, [h.chunk.id for h in a.hits]) == (b.text, [h.chunk.id for h in b.hits])
               for a, b in zip(answers["faiss"], answers["pgvector"]))
    out["dev_questions"], out["identical_answers_and_hits"] = len(turns), same
    for store, bot in bots.items():
        ms = []
        for t in turns:
            qvec = embedder.embed([t[-1]])
            t0 = time.perf_counter()
            bot.retriever.search(t[-1], bot.settings.top_k, qvec)
            ms.append((time.perf_counter() - t0) * 1000)
        out[f"{store}_retrieval_p50_ms"] = round(pct(ms, 50), 2)
    return out


def pydocs(url: str, embedder: MiniLMEmbedder, built: Path, work: Path, repeats: int) -> dict:
    base = index_mod.load(built)
    settings = load_settings(corpus_dir=Path(base.manifest["corpus_dir"]), index_dir=built)
    chunks = base.chunks
    vectors = base.vectors(list(range(len(chunks))))
    out = {"chunks": len(chunks), "documents": len(base.sources)}

    t0 = time.perf_counter()  # what `save` does for FAISS, after embedding
    made = index_mod.make_faiss(vectors, settings)
    (work / "index.faiss").write_bytes(faiss.serialize_index(made).tobytes())
    out["faiss_store_write_s"] = round(time.perf_counter() - t0, 2)
    collection = f"bench-pydocs-{os.getpid()}"
    t0 = time.perf_counter()
    synced = sync(url, collection, base.manifest["corpus_dir"], base.manifest["embedder"], chunks,
                  vectors, base.manifest["source_keys"] if "source_keys" in base.manifest else
                  {s: s for s in base.sources})
    out["pgvector_store_write_s"] = round(time.perf_counter() - t0, 2)
    out["pgvector_rows_added"] = synced["chunks_added"]

    sets = {name: load_rows(path) for name, path in QUESTION_SETS.items()}
    questions = [r["question"] for rows in sets.values() for r in rows]
    known = KnownVectors(embedder.id, embedder.dim, dict(zip(questions, embedder.embed(questions))))
    store = PgVectorStore(url, collection, [c.id for c in chunks], base.manifest["dim"],
                          settings.hnsw_ef_search)
    in_db = index_mod.Index(store, chunks, base.manifest, built, base.title_vectors)
    in_db.__dict__["bm25"] = base.bm25  # the same lexical index for both (loaded once)
    retrievers = {name: Retriever.from_settings(index, settings, known)
                  for name, index in (("faiss", base), ("pgvector", in_db))}
    ms: dict[str, list[float]] = {name: [] for name in retrievers}
    for rep in range(repeats):  # the stores take turns, so load spikes hit both alike
        for name in sorted(retrievers, reverse=bool(rep % 2)):
            retrievers[name].search(questions[0], 5)  # warm-up
            table = {s: evaluate(retrievers[name], rows) for s, rows in sets.items()}
            ms[name] += [t for m in table.values() for t in m.pop("latencies_ms")]
            out[name] = {s: {k: round(v, 3) for k, v in m.items()} for s, m in table.items()}
    for name, times in ms.items():
        out[name].update(p50_ms=round(pct(times, 50), 2), p95_ms=round(pct(times, 95), 2))
    store.conn.execute(f"DELETE FROM {store.table} WHERE collection = %s", [collection])
    store.conn.execute("DELETE FROM chatbot_collections WHERE name = %s", [collection])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pydocs-index", type=Path, help="a built Python-docs index folder")
    parser.add_argument("--repeats", type=int, default=3, help="retrieval passes per store")
    parser.add_argument("--no-faq", action="store_true", help="only the Python docs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    url = os.environ.get("CHATBOT_DATABASE_URL", "")
    if not url:
        raise SystemExit("set CHATBOT_DATABASE_URL (python .ci/postgres.py start DIR prints one)")
    embedder = MiniLMEmbedder()
    embedder.embed(["warm-up"])
    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    try:
        report = {"load_before": os.getloadavg()}
        if not args.no_faq:
            report["faq"] = faq(url, embedder, work)
        if args.pydocs_index:
            report["pydocs"] = pydocs(url, embedder, args.pydocs_index, work, args.repeats)
        report["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
