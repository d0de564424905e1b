"""The evaluation's report: the worst cases, report.md and the summary table on the terminal."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

WORST_CASES = 12


def failures(rows: Sequence[dict], k: int, retrieval_only: bool) -> list[dict]:
    """What went wrong, most serious first: saying something unsupported or answering what the
    documents do not cover, then invalid citations, false refusals, missing key facts, retrieval
    misses."""
    found = []
    for r in rows:
        m = r["metrics"]
        if r["answerable"] and r["expected_sources"] and not m[f"hit@{k}"]:
            found.append((5, r, f"no expected source in the top {k} passages"))
        if retrieval_only:
            continue
        if m["refused"]:
            if r["answerable"]:
                found.append((3, r, f"false refusal: {r['note']}"))
            continue
        if not r["answerable"] and m["coverage"] == "full":
            found.append((0, r, "answered in full a question the documents do not cover"))
        if r["answerable"] and m["coverage"] == "partial":
            found.append((3, r, f"only a partial answer: {r['note']}"))
        unsupported = [s for s in m["sentences"] if not s["supported"]]
        if unsupported:
            found.append((1, r, "; ".join(f"unsupported “{s['text']}” ({s['reason']})"
                                          for s in unsupported)))
        if m["valid_citations"] < m["citations"]:
            found.append((2, r, f"{m['citations'] - m['valid_citations']} invalid citation(s)"))
        if m.get("mentions") is False:
            rank = (f"; expected passage ranked {m['rank'] or 'below ' + str(k)}"
                    if r["expected_sources"] else "")
            found.append((4, r, "mentions none of: " + ", ".join(r["must_mention_any"]) + rank))
    found.sort(key=lambda f: f[0])
    return [{"id": r["id"], "question": r["question"], "answer": r.get("answer", ""), "why": why}
            for _, r, why in found]


def _cell(value) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


def render_report(summary: dict, fails: Sequence[dict], plots: Sequence[Path],
                  problems: Sequence[str]) -> str:
    k = summary["k"]
    lines = [f"# Evaluation: {summary['questions_file']}", "",
             f"{summary['questions']} questions ({summary['answerable']} answerable), generator "
             f"`{summary['settings']['generator']}`, k={k}, "
             f"min_score={summary['settings']['min_score']}, "
             f"support_threshold={summary['settings']['support_threshold']}.", ""]
    if problems:
        lines += ["Skipped malformed lines:", "", *[f"- {p}" for p in problems], ""]
    ret = summary["retrieval"]
    lines += ["## Retrieval", "",
              *_table(["questions", "hit@1", f"hit@{k}", "MRR"],
                      [[ret["n"], ret["hit@1"], ret[f"hit@{k}"], ret["mrr"]]]), ""]
    if "answers" in summary:
        a, lat = summary["answers"], summary["latency_ms"]
        lines += ["## Answers", "", *_table(["metric", "value", "what it means"], [
            ["answered", a["answered"], "questions not refused"],
            ["citation validity", a["citation_validity"],
             "[n] markers naming a retrieved passage (must be 1)"],
            ["citation recall", a["citation_recall"],
             "answer sentences supported by the passages they cite"],
            ["citation precision", a["citation_precision"], "citations needed for that support"],
            ["must-mention rate", a["must_mention_rate"],
             "answerable questions whose answer names a key fact"],
            ["answerable: full", a["answerable_full"], "answered in full"],
            ["answerable: full, right passage cited", a["answerable_full_cited"],
             "answered in full, citing an expected passage"],
            ["answerable: partial", a["answerable_partial"], "only a partial answer"],
            ["false-refusal rate", a["false_refusal_rate"], "answerable questions refused"],
            ["unanswerable: full", a["unanswerable_full"], "answered in full (must be 0)"],
            ["unanswerable: partial", a["unanswerable_partial"],
             "missing part named, nearest topic quoted"],
            ["refusal accuracy", a["refusal_accuracy"], "unanswerable questions refused"],
            ["model wording rate", a["model_wording_rate"],
             "answers in the model's checked words (the rest quote the passages)"],
            ["model rewording rate", a["model_reworded_rate"],
             "... with a model sentence that is not a passage sentence copied word for word"],
            ["dropped claims", a["dropped_claims"],
             "draft sentences the pipeline removed as unsupported"],
            ["judge disagreements", a["judge_disagreements"],
             "sentences the pipeline passed but the re-run judge rejects"],
            ["latency p50 / p95 (ms)", f"{lat['p50']} / {lat['p95']}", "wall clock per question"],
        ]), ""]
    cal = summary.get("calibration")
    if cal:
        cur, best = cal["current"], cal["best"]
        lines += ["## Support judge calibration", "",
                  f"{cal['labels']} hand-labelled sentences ({cal['supported_labels']} supported); "
                  "precision and recall are of the verdict \"supported\"; cost counts a false "
                  f"\"supported\" {cal['false_support_cost']:g} times. "
                  f"Current threshold {cur['threshold']}: accuracy {cur['accuracy']}, "
                  f"precision {cur['precision']}, recall {cur['recall']}. "
                  f"Best (lowest cost): {best['threshold']} (accuracy {best['accuracy']}).", "",
                  *_table(["threshold", "accuracy", "precision", "recall", "false support", "cost"],
                          [[r["threshold"], r["accuracy"], r["precision"], r["recall"],
                            r["false_support_rate"], r["cost"]] for r in cal["table"]]), ""]
    lines += ["## Worst cases", ""]
    if not fails:
        lines += ["None.", ""]
    for f in fails[:WORST_CASES]:
        lines += [f"- **{f['id']}** — {_short(f['why'], 400)}", f"  - Q: {f['question']}"]
        if f["answer"]:
            lines += [f"  - A: {_short(f['answer'])}"]
    if len(fails) > WORST_CASES:
        lines += ["", f"…and {len(fails) - WORST_CASES} more in results.jsonl."]
    lines += ["", "## Plots", "", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    return "\n".join(lines)


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"eval: {summary['questions_file']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for group in ("retrieval", "answers", "latency_ms"):
        for key, value in summary.get(group, {}).items():
            table.add_row(f"{group} {key}", _cell(value))
    if summary.get("calibration"):
        table.add_row("judge accuracy (labels)",
                      _cell(summary["calibration"]["current"]["accuracy"]))
    Console().print(table)
