"""Answer latency and memory of the whole pipeline on the seed FAQ, with the real models.
Run from the repository root:

    python -m bench.answer_latency [--cold] [--questions N]

Prints index build time, model load times, time to first token, total answer time and the
LLM's decode speed per generator, and the peak memory of the process. --cold converts the
GGUF weights again into a temporary cache (what a user's very first start costs).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from chatbot import index, models
from chatbot.embedding import MiniLMEmbedder
from chatbot.config import load_settings
from chatbot.pipeline import Answer, Chatbot

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "tests/data/dev.jsonl").read_text().splitlines()]
    return [r["question"] for r in rows if "question" in r][:n]


def run(bot: Chatbot, qs: list[str]) -> dict:
    first, total, tps, refused = [], [], [], 0
    for q in qs:
        pieces, t0, t_first = [], time.perf_counter(), None
        for event in bot.stream(q):
            if isinstance(event, Answer):
                answer = event
            else:
                t_first = t_first or time.perf_counter()
                pieces.append(event)
        t_end = time.perf_counter()
        total.append(t_end - t0)
        refused += answer.refused
        if t_first and not answer.refused:
            first.append(t_first - t0)
            if bot.generator.name == "local" and t_end > t_first:
                ntok = len(bot.generator.tokenizer("".join(pieces))["input_ids"])
                tps.append(ntok / (answer.timings["generate_ms"] / 1000 - t_first + t0))
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return {"first_s": med(first), "total_s": med(total), "max_total_s": max(total),
            "tok_per_s": med(tps), "refused": refused, "n": len(qs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="convert the LLM weights again (first start)")
    parser.add_argument("--questions", type=int, default=12)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache" if args.cold else None
        settings = load_settings(corpus_dir=ROOT / "corpus", index_dir=Path(tmp) / "index", cache_dir=cache)
        embedder = MiniLMEmbedder()
        _, t_embedder = timed(embedder.embed, ["load"])
        built, t_build = timed(index.ensure, settings, embedder)
        _, t_llm = timed(models.llm, settings.cache_dir)
        qs = questions(args.questions)
        rows = {}
        for gen in ("extractive", "local"):
            bot = Chatbot(settings.replace(generator=gen), index=built, embedder=embedder)
            bot.answer("warm up")
            rows[gen] = run(bot, qs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"index build (FAQ, {built.manifest['chunk_count']} chunks): {t_build:.2f} s")
    print(f"embedder load: {t_embedder:.2f} s; LLM load{' + GGUF conversion' if args.cold else ''}: {t_llm:.2f} s")
    print(f"{'generator':<11} {'first token':>12} {'answer p50':>11} {'answer max':>11} {'tok/s':>7} refused")
    for gen, r in rows.items():
        print(f"{gen:<11} {r['first_s']:>10.2f} s {r['total_s']:>9.2f} s {r['max_total_s']:>9.2f} s "
              f"{r['tok_per_s']:>7.1f} {r['refused']}/{r['n']}")
    print(f"peak memory (RSS): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
