"""Running an evaluation: every question through the bot, then results, summary, report and
plots written to a folder."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from chatbot.config import Settings
from chatbot.evaluation.cases import Case, load_cases
from chatbot.evaluation.metrics import (LABELS, Judge, answer_metrics, calibrate, first_hit_rank,
                                        retrieval_metrics, summarize)
from chatbot.evaluation.plots import plot
from chatbot.evaluation.report import print_summary, failures, render_report

log = logging.getLogger(__name__)


def _case_fields(case: Case) -> dict:
    return {"id": case.id, "turns": list(case.turns), "answerable": case.answerable,
            "expected_sources": list(case.expected_sources),
            "must_mention_any": list(case.must_mention_any),
            "reference_answer": case.reference_answer}


def evaluate(cases: Sequence[Case], bot, retrieval_only: bool = False,
             progress: bool = True) -> list[dict]:
    """One results row per case: the case, the answer's JSON (or, retrieval-only, the passages),
    per-question metrics and wall-clock latency. Retrieval is scored on the bot's top_k passages."""
    from tqdm import tqdm

    from chatbot.pipeline import standalone_query

    k = bot.settings.top_k
    s = bot.settings
    judge = Judge(bot.embedder, s.support_threshold, s.claim_zipf, s.family_similarity,
                  s.certainty_check, s.one_sentence_support)
    rows = []
    for case in tqdm(cases, desc="questions", unit="q", disable=not progress):
        query = standalone_query(case.question.strip(), case.history)
        row = {**_case_fields(case), "question": case.question, "query": query}
        t0 = time.perf_counter()
        if retrieval_only:
            row["query"], hits = bot.passages(case.question, case.history)
            row["timings"] = {"retrieve_ms": round((time.perf_counter() - t0) * 1000, 1)}
        else:
            answer = bot.answer(case.question, list(case.history))
            row["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            row.update(answer.to_dict())
            hits = answer.hits
        retrieved = [{"source": h.chunk.source, "title": h.chunk.title, "score": round(h.score, 4),
                      "dense": round(h.dense, 4), "text": h.chunk.text} for h in hits]
        row["retrieved"] = retrieved  # as the answer has them, plus the dense score refusals read
        if not hits:  # refused before retrieval (an injection): score retrieval all the same
            _, hits = bot.passages(case.question, case.history)
            retrieved = [{"source": h.chunk.source, "text": h.chunk.text} for h in hits]
        metrics = retrieval_metrics(first_hit_rank(retrieved, case.expected_sources), k)
        metrics["top_dense"] = max((h.dense for h in hits), default=0.0)
        if not retrieval_only:
            metrics.update(answer_metrics(row, case, judge))
        rows.append({**row, "metrics": metrics})
    return rows


def run(path: Path, out: Path, bot, retrieval_only: bool = False, labels: Path | None = LABELS,
        progress: bool = True) -> dict:
    """Evaluate a questions file and write results.jsonl, summary.json, report.md and plots to
    `out`."""
    s = bot.settings
    cases, problems = load_cases(Path(path).read_text(encoding="utf-8").splitlines())
    for p in problems:
        log.warning("%s: skipped %s", path, p)
    if not cases:
        raise ValueError(f"{path} holds no valid questions")
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate(cases, bot, retrieval_only, progress)
    with open(out / "results.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    summary = {"questions_file": str(path), "k": s.top_k, "skipped_lines": problems,
               "settings": {"generator": "none (retrieval only)" if retrieval_only else s.generator,
                            "top_k": s.top_k, "min_score": s.min_score,
                            "support_threshold": s.support_threshold, "claim_zipf": s.claim_zipf},
               **summarize(rows, s.top_k, retrieval_only)}
    if labels and Path(labels).exists() and not retrieval_only:
        summary["calibration"] = calibrate(bot.embedder, labels, s.claim_zipf,
                                         current=s.support_threshold)
    fails = failures(rows, s.top_k, retrieval_only)
    summary["failures"] = fails
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False),
                                      encoding="utf-8")
    plots = plot(rows, s, out, retrieval_only)
    (out / "report.md").write_text(render_report(summary, fails, plots, problems), encoding="utf-8")
    return summary


def main(args, settings: Settings) -> int:
    """CLI entry. Exit 1 when a citation names no retrieved passage: that must never happen."""
    from chatbot.pipeline import Chatbot

    settings = settings.replace(generator="extractive") if args.retrieval_only else settings
    summary = run(args.questions, args.out, Chatbot(settings), args.retrieval_only)
    print_summary(summary)
    log.info("Report: %s", args.out / "report.md")
    validity = summary.get("answers", {}).get("citation_validity")
    return 1 if validity is not None and validity < 1.0 else 0
