"""What the evaluation measures, from the answers' JSON alone: retrieval ranks, citation validity,
ALCE citation recall and precision with the pipeline's own support judge, the aggregates, and
the judge's agreement with hand labels."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from chatbot import grounding
from chatbot.embedding import Embedder
from chatbot.evaluation.cases import Case

LABELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "support_labels.jsonl"


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


def passage_statements(text: str, title: str = "") -> list[str]:
    """The sentences of a passage a claim can rest on, as the pipeline offers them (`title`:
    the heading the passage sits under), and as it quotes them after the first under the same
    name in code: without the name (`grounding.unrepeated`; a Python fresh set's quote "It is
    expected that init=False fields will be rarely ... used." scored 0.748 against its named
    form)."""
    return list(dict.fromkeys(t for statement in grounding.evidence(text, heading=title)
                              for t in (statement.said, statement.text)))


class Judge:
    """grounding.support as the pipeline runs it (thresholds, and, when given, word families,
    the certainty check and the one-sentence scope), embedding each text once: a sentence it
    rejects that the pipeline passed is a bug in assembling answers, not a difference between
    two judges."""

    def __init__(self, embedder: Embedder, threshold: float, zipf: float,
                 family_similarity: float = 1.0, hedges: bool = False,
                 one_sentence: bool = False):
        self.embedder, self.threshold, self.zipf = embedder, threshold, zipf
        self.family_similarity, self.hedges = family_similarity, hedges
        self.one_sentence = one_sentence
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
                                 self.family_similarity, self.hedges, self.one_sentence)


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


def reworded(result: dict) -> bool:
    """Whether a served sentence of the model's is more than a run of a cited passage's words
    (a sentence of it, or part of one, copied): a copy is the model choosing a quote, not
    writing. 30 of the 37 model sentences served on the FAQ dev set were copies (2026-11-28),
    so `wording` alone overstates how much of the answer the model wrote."""
    passages = [c.get("text", "") for c in result.get("citations", [])]
    return any(c["supported"] and not c.get("quoted")
               and not any(grounding.copied(c["text"], p) for p in passages)
               for c in result.get("claims", []))


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
    passages = {c["n"]: passage_statements(c["text"], c.get("title", ""))
                for c in result["citations"]}
    # a partial answer's framing ("The documents do not mention ...") and advice cite nothing
    body = result["answer"][len(result.get("preamble", "")):
                            len(result["answer"]) - len(result.get("advice", ""))]
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
        model_reworded=reworded(result),
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
        "model_reworded_rate": _mean([m["model_reworded"] for m in answered]),
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
