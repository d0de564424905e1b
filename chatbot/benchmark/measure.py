"""The measurements of one benchmark run, each a function that times one stage of the product
through its own entry point (index.rebuild, models.embed, Retriever.search, Generator.stream,
Chatbot.answer), after a warm-up, repeated; reporting is in report.py."""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from chatbot import grounding, index as index_mod
from chatbot.config import Settings
from chatbot.embedding import Embedder
from chatbot.generation import Generator, build_messages
from chatbot.retrieval import Retriever

WARMUP = 2  # untimed calls before each latency series: first calls allocate and fill caches
FACT_PASSAGES = 2  # LLM prompts carry the first statements of this many passages, as answers do
FACT_SENTENCES = 3  # ...this many from each


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype="float64"), q))


def ingest(settings: Settings, embedder: Embedder, work: Path, repeats: int) -> dict:
    """Whole ingest (read, parse, chunk, embed, index, save) into an empty folder, `repeats`
    times, the fastest counting; then a rebuild from the cached vectors alone (index_build_s:
    hashing files, reading the cache, FAISS + BM25, saving). The embedder is loaded first: its
    load time is start-up, not ingest."""
    embedder.embed(["warm-up"])
    times, embed_s = [], []
    for n in range(repeats):
        s = replace(settings, index_dir=work / f"ingest-{n}")
        t0 = time.perf_counter()
        built = index_mod.rebuild(s, embedder)
        times.append(time.perf_counter() - t0)
        embed_s.append(built.manifest.get("embed_seconds"))
    last = replace(settings, index_dir=work / f"ingest-{repeats - 1}")
    t0 = time.perf_counter()
    built = index_mod.rebuild(last, embedder)
    build_s = time.perf_counter() - t0
    n = len(built.chunks)
    return {"n_chunks": n, "n_documents": len(built.sources),
            "ingest_s": round(min(times), 2), "ingest_chunks_per_s": round(n / min(times), 1),
            "ingest_embed_s": embed_s[times.index(min(times))],
            "index_build_s": round(build_s, 3), "index_dir": str(last.index_dir)}


def embed_only(index: index_mod.Index, settings: Settings, embedder: Embedder,
               repeats: int) -> dict:
    """The texts ingest embeds (every chunk and each document title), through the embedder
    alone, in ingest's batches: what the pipeline around the model costs is the difference."""
    titles = list(dict.fromkeys(c.doc_title for c in index.chunks))
    texts = [c.embed_text for c in index.chunks] + titles
    size = settings.embed_batch_chunks
    embedder.embed(texts[:size])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, len(texts), size):
            embedder.embed(texts[start:start + size])
        times.append(time.perf_counter() - t0)
    return {"embed_only_s": round(min(times), 2),
            "embed_only_chunks_per_s": round(len(index.chunks) / min(times), 1)}


def retrieval(retriever: Retriever, questions: list[str], k: int) -> dict:
    """Latency of one search, embedding the question included, over the questions."""
    for q in questions[:WARMUP]:
        retriever.search(q, k)
    times = []
    for q in questions:
        t0 = time.perf_counter()
        retriever.search(q, k)
        times.append((time.perf_counter() - t0) * 1000)
    return {"retrieval_p50_ms": round(percentile(times, 50), 2),
            "retrieval_p95_ms": round(percentile(times, 95), 2),
            "retrieval_questions": len(times)}


def _facts(retriever: Retriever, question: str, k: int) -> list[tuple[int, str]]:
    """Numbered facts as the pipeline gives them to the LLM: statements of the top passages."""
    facts = []
    for h in retriever.search(question, k)[:FACT_PASSAGES]:
        c = h.chunk
        spans = grounding.statements(c.text, c.start)[:FACT_SENTENCES]
        if spans:
            facts.append((len(facts) + 1,
                          " ".join(c.text[a - c.start:b - c.start] for a, b in spans)))
    return facts


def token_counter(generator: Generator) -> tuple[Callable[[str], int], str]:
    """How to count a generator's tokens when it does not report them: its own tokenizer if it
    exposes one (`count_tokens`, or a Hugging Face `tokenizer`), else about 4 characters a token,
    and which one it was."""
    if callable(getattr(generator, "count_tokens", None)):
        return generator.count_tokens, "generator.count_tokens"
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "encode"):
        return (lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
                "the generator's tokenizer")
    return (lambda text: max(1, round(len(text) / 4))), "characters / 4 (no tokenizer exposed)"


def _reported(generator: Generator) -> tuple[int, int] | None:
    """(prompt, output) tokens of the last stream as the backend counted them (llama.cpp's
    `last_timings`), if it says."""
    timings = getattr(generator, "last_timings", None) or {}
    if isinstance(timings.get("prompt_n"), int) and isinstance(timings.get("predicted_n"), int):
        return timings["prompt_n"], timings["predicted_n"]
    return None


def model_bytes(generator: Generator) -> int | None:
    """Bytes of weights a decoding step reads: `model_bytes` if the generator says, else its
    torch parameters, else the size of its weights file (`gguf` or `model_path`); None
    without a local model."""
    if isinstance(getattr(generator, "model_bytes", None), int):
        return generator.model_bytes
    model = getattr(generator, "model", None)
    if model is not None and hasattr(model, "parameters"):
        return int(sum(p.numel() * p.element_size() for p in model.parameters()))
    path = getattr(generator, "gguf", None) or getattr(generator, "model_path", None)
    return Path(path).stat().st_size if path and Path(path).is_file() else None


def _timed(pieces: Iterator[str]) -> tuple[str, float, float]:
    """Text, seconds to the first piece, seconds to the last."""
    t0, first, out = time.perf_counter(), None, []
    for piece in pieces:
        if first is None:
            first = time.perf_counter() - t0
        out.append(piece)
    return "".join(out), first if first is not None else 0.0, time.perf_counter() - t0


class _Run(NamedTuple):
    prompt: int  # tokens
    output: int
    first: float  # seconds to the first piece
    total: float
    guessed: int  # output tokens accepted from prompt-lookup guesses


def llm(generator: Generator, retriever: Retriever, questions: list[str], k: int) -> dict:
    """First-token time, prefill and decode speed through `Generator.stream`, whatever the
    backend. Prefill speed is prompt tokens (the messages' text; the chat template's few markup
    tokens are not counted) over the first-token time; decode speed is the tokens after the
    first over the time after the first piece (a piece may hold several tokens), guessed
    tokens included (`llm_guessed_share` of them: then more than one token a weights pass;
    `llm_decode_passes_per_s` counts the passes, what the bandwidth bound is about)."""
    count, how = token_counter(generator)
    runs, reported = [], 0
    prompts = [(q, _facts(retriever, q, k)) for q in questions]
    prompts = [(q, f) for q, f in prompts if f]
    for q, facts in prompts[:1]:
        _timed(generator.stream(q, facts))  # warm-up
    for q, facts in prompts:
        text, first, total = _timed(generator.stream(q, facts))
        backend = _reported(generator)
        reported += backend is not None
        guessed = (getattr(generator, "last_timings", None) or {}).get("draft_n_accepted", 0)
        prompt = "\n".join(m["content"] for m in build_messages(q, facts))
        prompt_n, output_n = backend or (count(prompt), count(text) if text else 0)
        runs.append(_Run(prompt_n, output_n, first, total, guessed))
    timed = [r for r in runs if r.output > 1 and r.total > r.first]
    decode = [(r.output - 1) / (r.total - r.first) for r in timed]
    passes = [(r.output - 1 - r.guessed) / (r.total - r.first) for r in timed]
    return {"llm_ttft_s": round(statistics.median(r.first for r in runs), 3),
            "llm_prefill_tok_s": round(statistics.median(r.prompt / r.first for r in runs
                                                         if r.first), 1),
            "llm_decode_tok_s": round(statistics.median(decode), 1) if decode else None,
            "llm_decode_passes_per_s": round(statistics.median(passes), 1) if passes else None,
            "llm_output_tokens_mean": round(statistics.mean(r.output for r in runs), 1),
            # decoded in batched steps from guesses (llm_draft_tokens), not one token a step
            "llm_guessed_share": round(sum(r.guessed for r in runs)
                                       / max(1, sum(r.output for r in runs)), 3),
            "llm_prompts": len(runs),
            "llm_token_count": "as the backend reported them" if reported == len(runs) else how}


def answers(answer: Callable[[str], object], questions: list[str]) -> dict:
    """Seconds per full answer (retrieve, check, draft, ground), after a warm-up."""
    for q in questions[:WARMUP]:
        answer(q)
    times = []
    for q in questions:
        t0 = time.perf_counter()
        answer(q)
        times.append(time.perf_counter() - t0)
    return {"answer_p50_s": round(percentile(times, 50), 3),
            "answer_p95_s": round(percentile(times, 95), 3), "answer_questions": len(times)}


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="chatbot-bench-")
