"""Batch evaluation: does the bot find the right passage, cite it, say only what it supports,
and refuse what the documents do not cover? `python -m chatbot eval QUESTIONS.jsonl`.

Answer metrics are computed from the `to_dict()` JSON alone, as an outside reader would: the
support judge is re-run on each answer sentence against the passages it cites instead of
trusting the pipeline's own `supported` flags, so a bug in how answers are assembled (a citation
moved to the wrong sentence, a claim that slipped past the check) shows up here.
Citation recall and precision follow ALCE (Gao et al. 2023, "Enabling Large Language Models to
Generate Text with Citations"), with grounding.support as the entailment judge.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from chatbot import grounding
from chatbot.embedding import Embedder
from chatbot.config import Settings

log = logging.getLogger(__name__)

LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "support_labels.jsonl"
WORST_CASES = 12


# -- input -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One evaluation question; `turns` ends with the question evaluated, earlier ones are
    history."""
    id: str
    turns: tuple[str, ...]
    answerable: bool = True
    expected_sources: tuple[str, ...] = ()
    must_mention_any: tuple[str, ...] = ()
    reference_answer: str = ""

    @property
    def question(self) -> str:
        return self.turns[-1]

    @property
    def history(self) -> tuple[str, ...]:
        return self.turns[:-1]


def _strings(row: dict, key: str) -> tuple[str, ...]:
    value = row.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{key!r} must be a list of non-empty strings")
    return tuple(value)


def parse_case(row: object, default_id: str) -> Case:
    """A Case from one decoded JSON line; ValueError says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    if "turns" in row:
        turns = _strings(row, "turns")
    elif isinstance(row.get("question"), str) and row["question"].strip():
        turns = (row["question"],)
    else:
        raise ValueError("needs a non-empty 'question' or 'turns'")
    if not turns:
        raise ValueError("'turns' is empty")
    answerable = row.get("answerable", True)
    if not isinstance(answerable, bool):
        raise ValueError("'answerable' must be true or false")
    reference = row.get("reference_answer") or ""
    if not isinstance(reference, str):
        raise ValueError("'reference_answer' must be a string")
    return Case(id=str(row.get("id") or default_id), turns=turns, answerable=answerable,
                expected_sources=_strings(row, "expected_sources"),
                must_mention_any=_strings(row, "must_mention_any"), reference_answer=reference)


def load_cases(lines: Iterable[str]) -> tuple[list[Case], list[str]]:
    """Cases, and one problem per malformed line ("line 7: ..."): a bad line costs that line
    only."""
    cases, problems, seen = [], [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = parse_case(json.loads(line), f"line-{n}")
            if case.id in seen:
                raise ValueError(f"duplicate id {case.id!r}")
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            problems.append(f"line {n}: {err}")
            continue
        seen.add(case.id)
        cases.append(case)
    return cases, problems


# -- retrieval metrics ---------------------------------------------------------------------------

def passage_matches(passage: dict, expected: str) -> bool:
    """An expected source is a file name (the passage's source equals or ends with it) or a
    snippet of text the passage contains."""
    source = passage.get("source", "")
    return (source == expected or source.endswith("/" + expected)
            or expected in passage.get("text", ""))


def first_hit_rank(retrieved: Sequence[dict], expected: Sequence[str]) -> int | None:
    """1-based rank of the first passage matching any expected source, None if none does."""
    for rank, passage in enumerate(retrieved, 1):
        if any(passage_matches(passage, e) for e in expected):
            return rank
    return None


def retrieval_metrics(rank: int | None, k: int) -> dict:
    return {"hit@1": float(rank == 1), f"hit@{k}": float(rank is not None and rank <= k),
            "rr": 1.0 / rank if rank else 0.0, "rank": rank}


# -- answer metrics (from the JSON output only) --------------------------------------------------

def cited_sentences(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without markers, its [n] numbers) for each answer sentence."""
    return [grounding.split_citations(p) for p in grounding.answer_sentences(answer)]


def _citation_ok(citation: dict, retrieved: Sequence[dict]) -> bool:
    """Points at a retrieved passage, and its highlighted spans lie inside that passage."""
    in_retrieved = any(p["source"] == citation["source"] and p["text"] == citation["text"]
                       for p in retrieved)
    spans_inside = all(citation["start"] <= a < b <= citation["end"] for a, b in citation["spans"])
    return in_retrieved and spans_inside


def citation_validity(result: dict) -> tuple[int, int]:
    """(valid, total) [n] markers in the answer; valid = names a citation that is a retrieved
    passage."""
    by_n = {c["n"]: c for c in result.get("citations", [])}
    marks = [n for _, ns in cited_sentences(result["answer"]) for n in ns]
    valid = sum(1 for n in marks
                if n in by_n and _citation_ok(by_n[n], result.get("retrieved", [])))
    return valid, len(marks)


def passage_statements(text: str) -> list[str]:
    """The sentences of a passage a claim can rest on, as the pipeline offers them."""
    return [sentence for _, sentence in grounding.evidence(text)]


class Judge:
    """grounding.support as the pipeline runs it (thresholds, and, when given, word families and
    the certainty check), embedding each text once: a sentence it rejects that the pipeline
    passed is a bug in assembling answers, not a difference between two judges."""

    def __init__(self, embedder: Embedder, threshold: float, zipf: float,
                 family_similarity: float = 1.0, hedges: bool = False):
        self.embedder, self.threshold, self.zipf = embedder, threshold, zipf
        self.family_similarity, self.hedges = family_similarity, hedges
        self._vecs: dict[str, np.ndarray] = {}

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vecs]
        if missing:
            self._vecs.update(zip(missing, self.embedder.embed(missing)))
        return np.stack([self._vecs[t] for t in texts])

    def __call__(self, claim: str, passage_sentences: Sequence[str]) -> grounding.Support:
        vecs = self.vectors([claim, *passage_sentences])
        return grounding.support(claim, vecs[0], list(passage_sentences), vecs[1:],
                                 self.threshold, self.zipf, self.vectors,
                                 self.family_similarity, self.hedges)


def judge_sentence(judge: Judge, claim: str, cited: Sequence[int],
                   passages: dict[int, list[str]]) -> dict:
    """ALCE for one answer sentence: supported by all its cited passages together (recall), and
    which citations are needed for that (precision): a citation is relevant when the joint
    support holds and either it supports the claim alone or the others do not without it."""
    cited = [n for n in dict.fromkeys(cited) if passages.get(n)]

    def verdict(ns: Sequence[int]) -> grounding.Support | None:
        sentences = [s for n in ns for s in passages[n]]
        return judge(claim, sentences) if sentences else None

    joint = verdict(cited)
    supported = bool(joint and joint.supported)
    relevant = 0
    if supported:
        for n in cited:
            alone = len(cited) == 1 or verdict([n]).supported
            rest = verdict([m for m in cited if m != n]) if len(cited) > 1 else None
            relevant += alone or not (rest and rest.supported)
    return {"text": claim, "citations": cited, "supported": supported,
            "relevant_citations": relevant,
            "score": round(joint.score, 3) if joint else 0.0,
            "reason": (joint.reason if joint else "cites no passage")}


def answer_metrics(result: dict, case: Case, judge: Judge) -> dict:
    """Per-question answer metrics from the JSON answer alone."""
    m: dict = {"refused": result["refused"], "coverage": result["coverage"],
               "cites_expected": any(passage_matches(c, e) for c in result.get("citations", [])
                                     for e in case.expected_sources)}
    if case.must_mention_any:
        m["mentions"] = not result["refused"] and any(
            t.lower() in result["answer"].lower() for t in case.must_mention_any)
    if result["refused"]:
        return m
    passages = {c["n"]: passage_statements(c["text"]) for c in result["citations"]}
    # a partial answer's framing ("The documents do not mention ...") cites nothing
    body = result["answer"][len(result.get("preamble", "")):]
    sentences = [judge_sentence(judge, text, ns, passages) for text, ns in cited_sentences(body)]
    valid, marks = citation_validity(result)
    pipeline_ok = {c["text"] for c in result.get("claims", []) if c["supported"]}
    m.update(
        sentences=sentences, citations=marks, valid_citations=valid,
        citation_recall=float(np.mean([s["supported"] for s in sentences])) if sentences else 0.0,
        citation_precision=((sum(s["relevant_citations"] for s in sentences) / marks)
                            if marks else 0.0),
        support_score=float(np.mean([s["score"] for s in sentences])) if sentences else 0.0,
        dropped_claims=sum(1 for c in result.get("claims", []) if not c["supported"]),
        kept_claims=sum(1 for c in result.get("claims", []) if c["supported"]),
        # whose words are served: the model's checked draft, or the passages' own sentences
        model_wording=result.get("wording") == "model",
        # sentences the pipeline passed but the re-run judge rejects: a bug in assembling answers
        judge_disagreements=[s["text"] for s in sentences
                             if s["text"] in pipeline_ok and not s["supported"]],
    )
    return m


# -- aggregates ----------------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 3) if len(values) else None


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def summarize(rows: Sequence[dict], k: int, retrieval_only: bool) -> dict:
    """Aggregates over per-question rows. Retrieval metrics count answerable questions with
    expected sources; citation metrics average answered questions (ALCE averages per answer)."""
    scored = [r["metrics"] for r in rows if r["answerable"] and r["expected_sources"]]
    out = {"questions": len(rows), "answerable": sum(r["answerable"] for r in rows),
           "retrieval": {"n": len(scored), "hit@1": _mean([m["hit@1"] for m in scored]),
                         f"hit@{k}": _mean([m[f"hit@{k}"] for m in scored]),
                         "mrr": _mean([m["rr"] for m in scored])}}
    if retrieval_only:
        return out
    answerable = [r["metrics"] for r in rows if r["answerable"]]
    unanswerable = [r["metrics"] for r in rows if not r["answerable"]]
    answered = [r["metrics"] for r in rows if not r["metrics"]["refused"]]
    marks = sum(m["citations"] for m in answered)
    mentions = [m["mentions"] for m in answerable if "mentions" in m]
    labelled = [r["metrics"] for r in rows if r["answerable"] and r["expected_sources"]]

    def share(group: Sequence[dict], coverage: str) -> float | None:
        return _mean([m["coverage"] == coverage for m in group])

    latencies = [r["latency_ms"] for r in rows]
    out["answers"] = {
        "answered": len(answered),
        "citation_validity": (round(sum(m["valid_citations"] for m in answered) / marks, 3)
                              if marks else None),
        "citation_recall": _mean([m["citation_recall"] for m in answered]),
        "citation_precision": _mean([m["citation_precision"] for m in answered]),
        "must_mention_rate": _mean(mentions),
        "answerable_full": share(answerable, "full"),
        "answerable_full_cited": _mean([m["coverage"] == "full" and m["cites_expected"]
                                        for m in labelled]),
        "answerable_partial": share(answerable, "partial"),
        "false_refusal_rate": _mean([m["refused"] for m in answerable]),
        "unanswerable_full": share(unanswerable, "full"),
        "unanswerable_partial": share(unanswerable, "partial"),
        "refusal_accuracy": _mean([m["refused"] for m in unanswerable]),
        "model_wording_rate": _mean([m["model_wording"] for m in answered]),
        "dropped_claims": sum(m["dropped_claims"] for m in answered),
        "judge_disagreements": sum(len(m["judge_disagreements"]) for m in answered),
    }
    out["latency_ms"] = {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                         "max": round(max(latencies), 1) if latencies else None}
    return out


# -- judge calibration ---------------------------------------------------------------------------

def calibrate(embedder: Embedder, labels_path: Path = LABELS, zipf: float = 4.0,
              thresholds: Sequence[float] = tuple(np.round(np.arange(0.5, 0.96, 0.025), 3)),
              current: float | None = None, false_support_cost: float = 2.0) -> dict:
    """Agreement of the support judge with hand labels ({sentence, passage, supported} lines)
    at each support threshold. The judge's other checks (rare words, quantifiers, negation) do not
    depend on the threshold, so each label is judged once. Best = fewest errors when calling an
    unsupported claim supported counts `false_support_cost` times (it puts words in the documents'
    mouth; a wrong rejection only drops a sentence), ties going to the stricter threshold."""
    rows = [json.loads(line) for line in Path(labels_path).read_text().splitlines() if line.strip()]
    judge = Judge(embedder, threshold=0.0, zipf=zipf)
    verdicts = [judge(r["sentence"], passage_statements(r["passage"])) for r in rows]
    labels = np.array([bool(r["supported"]) for r in rows])
    passed = np.array([v.supported for v in verdicts])  # every check but the threshold
    scores = np.array([v.score for v in verdicts])

    def at(t: float) -> dict:
        pred = passed & (scores >= t)
        tp, fp = int(np.sum(pred & labels)), int(np.sum(pred & ~labels))
        return {"threshold": round(float(t), 3),
                "accuracy": round(float(np.mean(pred == labels)), 3),
                "cost": round(false_support_cost * fp + int(np.sum(~pred & labels)), 3),
                "precision": round(tp / (tp + fp), 3) if tp + fp else None,
                "recall": round(tp / int(labels.sum()), 3) if labels.any() else None,
                "false_support_rate": (round(fp / int((~labels).sum()), 3)
                                       if (~labels).any() else None)}

    table = [at(t) for t in thresholds]
    best = min(table, key=lambda row: (row["cost"], -row["threshold"]))
    return {"labels": len(rows), "supported_labels": int(labels.sum()),
            "false_support_cost": false_support_cost,
            "table": table, "best": best,
            "current": at(current) if current is not None else None}


# -- running -------------------------------------------------------------------------------------

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
                  s.certainty_check)
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


# -- report --------------------------------------------------------------------------------------

def plot(rows: Sequence[dict], settings: Settings, out: Path, retrieval_only: bool) -> list[Path]:
    """PNG plots: top retrieval score by answerability against the refusal threshold; and, with
    answers, each answer's mean support score against the support threshold, and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [("answerable", [r["metrics"]["top_dense"] for r in rows if r["answerable"]]),
              ("unanswerable", [r["metrics"]["top_dense"] for r in rows if not r["answerable"]])]
    bins = np.linspace(min([0.0, *[v for _, vs in groups for v in vs]]), 1.0, 26)
    for label, values in groups:
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})")
    ax.axvline(settings.min_score, color="k", linestyle="--",
               label=f"refusal threshold {settings.min_score}")
    ax.set(xlabel="best dense (cosine) score of the retrieved passages", ylabel="questions",
           title="Retrieval score: answerable vs unanswerable")
    ax.legend()
    paths.append(_save(fig, out / "retrieval_scores.png"))
    if retrieval_only:
        return paths

    answered = [r for r in rows if not r["metrics"]["refused"]]
    ids = [r["id"] for r in answered]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(7, 0.25 * len(answered)), 6))
    colors = ["tab:green" if r["metrics"]["citation_recall"] == 1.0 else "tab:red"
              for r in answered]
    top.bar(ids, [r["metrics"]["support_score"] for r in answered], color=colors)
    top.axhline(settings.support_threshold, color="k", linestyle="--",
                label=f"support threshold {settings.support_threshold}")
    top.set(ylabel="mean support score", ylim=(0, 1.05),
            title="Per-question support of the answer (red: a sentence is unsupported)")
    top.legend(loc="lower right")
    kept = [r["metrics"]["kept_claims"] for r in answered]
    bottom.bar(ids, kept, color="tab:green", label="kept (incl. quoted passages)")
    bottom.bar(ids, [r["metrics"]["dropped_claims"] for r in answered], bottom=kept,
               color="tab:gray", label="dropped as unsupported")
    bottom.set(ylabel="draft sentences")
    bottom.tick_params(axis="x", labelrotation=90, labelsize=7)
    bottom.legend(loc="upper right")
    paths.append(_save(fig, out / "support.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([r["latency_ms"] / 1000 for r in rows], bins=20)
    ax.set(xlabel="seconds per question", ylabel="questions", title="Latency")
    paths.append(_save(fig, out / "latency.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def _print_summary(summary: dict) -> None:
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
    _print_summary(summary)
    log.info("Report: %s", args.out / "report.md")
    validity = summary.get("answers", {}).get("citation_validity")
    return 1 if validity is not None and validity < 1.0 else 0
