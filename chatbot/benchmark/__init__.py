"""`python -m chatbot bench`: where the time and memory go on this machine, in one run.

Measures ingest, the embedder alone on the same texts, re-indexing, retrieval, start-up of a
fresh `ask` process (cold and warm), the LLM through `Generator.stream` (first token, prefill,
decode, against the memory-bandwidth bound measured in the same run), full answers and memory;
writes one JSON object and prints a table. Every figure warms up first and repeats; the
machine's load is recorded before and after, since other jobs share the cores.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from chatbot.benchmark import machine, measure, report, startup
from chatbot.config import Settings

log = logging.getLogger(__name__)

MAX_QUESTIONS = 40  # retrieval questions per run (latency percentiles), from the file or titles
LLM_QUESTIONS = 5  # prompts for the LLM figures and full answers (each a second or more)
SERVE_QUESTIONS = 3  # answered by the serving probe before its memory is read


def questions_from(path: Path | None, titles: list[str]) -> list[str]:
    """Questions from a JSONL file (`question`, or the last of `turns`), else the corpus's
    own chunk titles (FAQ questions, headings): realistic queries for any corpus."""
    if path is None:
        return list(dict.fromkeys(t for t in titles if t.strip()))[:MAX_QUESTIONS]
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(row.get("question") or row["turns"][-1])
    return out[:MAX_QUESTIONS]


def run(settings: Settings, repeats: int = 3, ingest_repeats: int = 1,
        questions_file: Path | None = None, config: Path | None = None) -> dict:
    """Every figure of the benchmark, as one flat JSON-ready dict (plus `machine`)."""
    from chatbot import index as index_mod
    from chatbot.embedding import make_embedder
    from chatbot.pipeline import Chatbot
    from chatbot.retrieval import Retriever

    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine.describe(),
                    "corpus": str(settings.corpus_dir), "generator": settings.generator,
                    "repeats": repeats, "ingest_repeats": ingest_repeats}
    result["mem_bandwidth_gbs"] = round(machine.memory_bandwidth_gbs(), 2)
    embedder = make_embedder(settings)  # what a serving process asks with
    with measure.scratch() as tmp:
        work = Path(tmp)
        log.info("bench: ingest and the embedder alone x%d (a process of their own)",
                 ingest_repeats)
        result.update(startup.ingest(settings, work, ingest_repeats, config))
        built = settings.replace(index_dir=Path(result.pop("index_dir")))
        index = index_mod.load(built.index_dir)
        result["ingest_vs_embed_only"] = round(
            result["ingest_chunks_per_s"] / result["embed_only_chunks_per_s"], 3)
        asked = questions_from(questions_file, [c.title for c in index.chunks])
        retriever = Retriever.from_settings(index, settings, embedder)
        log.info("bench: retrieval, %d questions", len(asked))
        result.update(measure.retrieval(retriever, asked, settings.top_k))
        bot = Chatbot(built, index=index, embedder=embedder)
        if bot.generator.name == "extractive":
            log.info("bench: generator %s runs no LLM: no LLM figures", bot.generator.name)
        else:
            log.info("bench: LLM through Generator.stream, %d prompts", LLM_QUESTIONS)
            result.update(measure.llm(bot.generator, retriever, asked[:LLM_QUESTIONS],
                                      settings.top_k))
        weights = measure.model_bytes(bot.generator)
        result["llm_model_bytes"] = weights
        result["decode_bound_tok_s"] = (round(result["mem_bandwidth_gbs"] * 1e9 / weights, 1)
                                        if weights else None)
        decode = result.get("llm_decode_tok_s")
        result["decode_vs_bound"] = (round(decode / result["decode_bound_tok_s"], 3)
                                     if decode and result["decode_bound_tok_s"] else None)
        log.info("bench: full answers, %d questions", LLM_QUESTIONS)
        result.update(measure.answers(bot.answer, asked[:LLM_QUESTIONS]))
        del bot
        log.info("bench: start-up (fresh `ask` processes) and serving memory")
        result.update(startup.starts(built, built.index_dir, work, asked[0], repeats, config,
                                     result["n_chunks"]))
        result.update(startup.serve_memory(built, built.index_dir, asked[:SERVE_QUESTIONS],
                                           config))
    result["peak_rss_mb"] = round(machine.peak_rss_mb(), 1)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main(args, settings: Settings) -> int:
    result = run(settings, args.repeats, args.ingest_repeats, args.questions, args.config)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(report.table(result))
    if args.out:
        print(f"written to {args.out}")
    return 0
