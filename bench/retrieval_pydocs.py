"""Retrieval benchmark on the Python 3.11 HTML docs (Debian's python3.11-doc, ~370 pages).

Ingests library/, tutorial/, reference/, howto/, faq/ and glossary.html into a work folder, then
scores each retrieval stage on the tuning questions (bench/data/pydocs_questions.jsonl) and on
two held-out sets written afterwards by helpers who never ran the system
(bench/data/pydocs_heldout*.jsonl); a hit is a retrieved chunk from an expected page. It also
times a re-ingest after one file changes.

    python -m bench.retrieval_pydocs [--work /tmp/pydocs-bench] [--fresh]

The full ingest takes 10-20 minutes on 2 cores; run it in the background. The work folder keeps
the index (bench/scale.py reuses its vectors); nothing is installed or committed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

from chatbot import evaluation
from chatbot import index as index_mod
from chatbot.config import load_settings
from chatbot.embedding import MiniLMEmbedder
from chatbot.retrieval import Retriever

HERE = Path(__file__).resolve().parent
EMBEDDER = MiniLMEmbedder()  # loads on first use
QUESTION_SETS = {"tuning": HERE / "data" / "pydocs_questions.jsonl",
                 "held-out": HERE / "data" / "pydocs_heldout.jsonl",
                 "held-out 2": HERE / "data" / "pydocs_heldout2.jsonl"}
# Each stage switched on in turn (the last line is the default configuration).
STAGES = {
    "dense": dict(retrieval_mode="dense", diversity=0.0),
    "bm25": dict(retrieval_mode="bm25", diversity=0.0),
    "rrf (dense + bm25)": dict(retrieval_mode="rrf", diversity=0.0),
    "blend (dense + 0.2 bm25)": dict(retrieval_mode="blend", title_weight=0.0, diversity=0.0),
    "dense + diversity": dict(retrieval_mode="dense"),
    "blend + title": dict(retrieval_mode="blend", diversity=0.0),
    "blend + title + diversity (default)": dict(retrieval_mode="blend"),
}
PARTS = ("library", "tutorial", "reference", "howto", "faq", "glossary.html")
CHANGED = "library/itertools.html"


def copy_corpus(html: Path, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        src, dst = html / part, corpus / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ranking_scores(rankings: list[tuple[list[str], list[str]]]) -> dict:
    """hit@1, hit@5 and MRR over (ranked sources, expected sources) pairs, as `chatbot eval` scores them."""
    scored = [evaluation.retrieval_metrics(evaluation.first_hit_rank([{"source": s} for s in ranked], expected), 5)
              for ranked, expected in rankings]
    return {name: sum(m[key] for m in scored) / len(scored)
            for name, key in (("hit@1", "hit@1"), ("hit@5", "hit@5"), ("mrr", "rr"))}


def evaluate(retriever: Retriever, rows: list[dict], k: int = 10) -> dict:
    """hit@1, hit@5, MRR@k over answerable questions; latency (ms) of every question."""
    latencies, rankings = [], []
    for row in rows:
        t0 = time.perf_counter()
        hits = retriever.search(row["question"], k)
        latencies.append((time.perf_counter() - t0) * 1000)
        if row["answerable"]:
            rankings.append(([h.chunk.source for h in hits], row["expected_sources"]))
    return {**ranking_scores(rankings), "latencies_ms": latencies}


def _without_latencies(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "latencies_ms"}


def timed_ingest(settings) -> tuple[float, dict]:
    t0 = time.perf_counter()
    built = index_mod.build(settings, EMBEDDER)
    index_mod.save(built, settings.index_dir, settings.database_url)
    return time.perf_counter() - t0, built.manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/pydocs-bench"))
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("faiss", "sentence_transformers", "bm25s", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    corpus, index_dir = args.work / "corpus", args.work / "index"
    copy_corpus(args.html, corpus)
    settings = load_settings(corpus_dir=corpus, index_dir=index_dir)
    results_file = args.work / "full_ingest.json"

    if not results_file.exists():  # the full ingest is slow: do it once per work folder
        seconds, manifest = timed_ingest(settings)
        results_file.write_text(json.dumps({"seconds": seconds, "chunks": manifest["chunk_count"],
                                            "files": len(manifest["files"]),
                                            "skipped": manifest["skipped"]}))
    full = json.loads(results_file.read_text())

    index_mod.ensure(settings, EMBEDDER)  # brings an index from an older run up to date
    t0 = time.perf_counter()
    index = index_mod.load(index_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.bm25  # noqa: B018  (the saved BM25, memory-mapped)
    bm25_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index_mod.lexical_index(index.chunks)
    bm25_build_s = time.perf_counter() - t0
    faiss_mb = disk_mb(index_dir / index.manifest["faiss_file"])
    manifest_mb = disk_mb(index_dir / index_mod.MANIFEST_FILE)
    cache_mb = disk_mb(index_dir / index_mod.CACHE_DIR)

    sets = {name: load_rows(path) for name, path in QUESTION_SETS.items()}
    rows = [r for questions in sets.values() for r in questions]
    table = {}
    for stage, changes in STAGES.items():
        retriever = Retriever.from_settings(index, settings.replace(**changes), EMBEDDER)
        retriever.search("warm-up", 5)
        table[stage] = {name: evaluate(retriever, questions) for name, questions in sets.items()}
        ms = [t for m in table[stage].values() for t in m.pop("latencies_ms")]
        table[stage]["p50_ms"], table[stage]["p95_ms"] = percentile(ms, 50), percentile(ms, 95)

    sweep = {f"{name}={value}": _without_latencies(evaluate(
                 Retriever.from_settings(index, settings.replace(**{name: value}), EMBEDDER),
                                         sets["tuning"]))
             for name, values in (("lexical_weight", (0.1, 0.35, 0.5)), ("title_weight", (0.1, 0.3)),
                                  ("diversity", (0.05, 0.2))) for value in values}

    # Unanswerable questions: how well does the best dense score separate them?
    retriever = Retriever.from_settings(index, settings, EMBEDDER)
    best = {r["id"]: max(h.dense for h in retriever.search(r["question"], 5)) for r in rows}
    refused = sum(best[r["id"]] < settings.min_score for r in rows if not r["answerable"])
    wrongly = sum(best[r["id"]] < settings.min_score for r in rows if r["answerable"])

    # Re-ingest after changing one file, then put it back.
    path = corpus / CHANGED
    original = path.read_text(encoding="utf-8")
    marker = '<div class="body" role="main">'
    path.write_text(original.replace(marker, marker + "<p>Benchmark edit: one new paragraph.</p>", 1),
                    encoding="utf-8")
    inc_s, inc_manifest = timed_ingest(settings)
    path.write_text(original, encoding="utf-8")
    timed_ingest(settings)

    n_ans = sum(r["answerable"] for r in rows)
    counts = ", ".join(f"{name} {sum(r['answerable'] for r in qs)} + {sum(not r['answerable'] for r in qs)}"
                       for name, qs in sets.items())
    print(f"\nPython docs: {full['files']} pages, {full['chunks']} chunks "
          f"({len(full['skipped'])} skipped), {index.manifest['index_type']}, machine: 2 CPU cores, "
          f"load average now {os.getloadavg()[0]:.1f} (shared with other jobs)")
    print(f"full ingest {full['seconds']:.0f} s ({full['chunks'] / full['seconds']:.1f} chunks/s incl. "
          f"parsing); load {load_s:.2f} s; BM25 load {bm25_load_s:.2f} s (building it instead: "
          f"{bm25_build_s:.1f} s)")
    print(f"on disk: FAISS {faiss_mb:.1f} MB, manifest {manifest_mb:.1f} MB, embedding cache {cache_mb:.1f} MB")
    print(f"re-ingest after changing {CHANGED}: {inc_s:.1f} s = {100 * inc_s / full['seconds']:.1f} % of "
          f"full ({inc_manifest['embedded_chunks']} chunks embedded)")
    print(f"\nquestions (answerable + unanswerable): {counts}; hit = chunk from an expected page; "
          "MRR over top 10; latency per query incl. embedding it, over all sets")
    print("| stages | " + " | ".join(f"{name} hit@1 | hit@5 | MRR" for name in sets) + " | p50 ms | p95 ms |")
    print("|---|" + "---|---|---|" * len(sets) + "---|---|")
    for stage, by_set in table.items():
        cells = [f"{by_set[name]['hit@1']:.2f} | {by_set[name]['hit@5']:.2f} | {by_set[name]['mrr']:.2f}"
                 for name in sets]
        print(f"| {stage} | " + " | ".join(cells) + f" | {by_set['p50_ms']:.0f} | {by_set['p95_ms']:.0f} |")
    print("one setting changed from the default, tuning set (hit@1 / hit@5 / MRR): " + "; ".join(
        f"{w}: {m['hit@1']:.2f} / {m['hit@5']:.2f} / {m['mrr']:.2f}" for w, m in sweep.items()))
    print(f"\nbest dense score < min_score {settings.min_score}: {refused}/{len(rows) - n_ans} "
          f"unanswerable, {wrongly}/{n_ans} answerable")
    (args.work / "results.json").write_text(json.dumps(
        {"full": full, "load_s": load_s, "bm25_load_s": bm25_load_s, "bm25_build_s": bm25_build_s, "faiss_mb": faiss_mb,
         "manifest_mb": manifest_mb, "cache_mb": cache_mb, "incremental_s": inc_s,
         "incremental_embedded": inc_manifest["embedded_chunks"], "modes": table, "blend_sweep": sweep,
         "unanswerable_below_min": refused, "answerable_below_min": wrongly}, indent=1))


if __name__ == "__main__":
    main()
