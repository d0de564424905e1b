"""Fit and measure the answerability scorer: signals on tuning questions in, weights out.

    python -m bench.answerability --fit            # fit on the tuning sets, write the weights
    python -m bench.answerability                  # report tuning and blind, with ablations

Every question runs through the real pipeline (extractive generator: the decision does not
depend on the LLM) to collect the signals it would decide on. The logistic regression and the
two cut-offs are chosen on the TUNING sets only; blind sets are scored and reported, never fitted.
The Python-docs sets need the index that `python -m bench.retrieval_pydocs` (or `ingest`) builds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from chatbot import answerability, evaluation, instructions
from chatbot.answerability import FEATURES, Scorer
from chatbot.config import load_settings
from chatbot.pipeline import Chatbot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAQ = dict(corpus_dir=ROOT / "corpus", index_dir=Path("/tmp/answerability-faq-index"))
PYDOCS = dict(corpus_dir=Path("/work/pydocs/corpus"), index_dir=Path("/work/pydocs/index"))
SETS = {  # name -> (corpus, file, role)
    "faq dev (team)": (FAQ, ROOT / "tests/data/dev.jsonl", "tuning"),
    "faq held-out (team)": (FAQ, ROOT / "tests/data/heldout.jsonl", "tuning"),
    "faq patients tuning": (FAQ, HERE / "data/faq_patients_tuning.jsonl", "tuning"),
    "faq patients blind": (FAQ, HERE / "data/faq_patients_blind.jsonl", "blind"),
    "pydocs users tuning": (PYDOCS, HERE / "data/pydocs_users_tuning.jsonl", "tuning"),
    "pydocs users blind": (PYDOCS, HERE / "data/pydocs_users_blind.jsonl", "blind"),
    # read after its first run, three rules changed on it (2026-11-27): tuning data since
    "faq fresh": (FAQ, HERE / "data/faq_patients_fresh.jsonl", "tuning"),
    "faq fresh2": (FAQ, HERE / "data/faq_patients_fresh2.jsonl", "blind"),
    # run once to decide the refit on the glossary's signals (2026-11-28): totals only read
    "faq fresh3": (FAQ, HERE / "data/faq_patients_fresh3.jsonl", "blind"),
    "pydocs fresh": (PYDOCS, HERE / "data/pydocs_users_fresh.jsonl", "blind"),
    # totals only read on 2026-11-28 night; tuning data from the next morning, when two new
    # sets took their place (bench/data/fresh_README.md)
    "faq fresh4": (FAQ, HERE / "data/faq_patients_fresh4.jsonl", "tuning"),
    "pydocs fresh2": (PYDOCS, HERE / "data/pydocs_users_fresh2.jsonl", "tuning"),
    # tuning by design, written after the 2026-11-28 morning's decisions
    "faq tuning2": (FAQ, HERE / "data/faq_patients_tuning2.jsonl", "tuning"),
    "pydocs near misses": (PYDOCS, HERE / "data/pydocs_nearmiss_tuning.jsonl", "tuning"),
    "faq fresh5": (FAQ, HERE / "data/faq_patients_fresh5.jsonl", "blind"),
    "pydocs fresh3": (PYDOCS, HERE / "data/pydocs_users_fresh3.jsonl", "blind"),
}
# Answering an unanswerable question in full is the harm; a partial answer to an answerable one
# costs the reader a little. Cut-offs minimise this cost on tuning data. At 4 the refit on the
# glossary's signals (2026-11-28) chose 0.52: 25 more full answers of 187 for 6 more of 30 near
# misses answered in full (3 -> 9); the target is none, so 5 (any cost 5-16: 0.64).
FULL_ERROR_COST = 5.0
# the partial cut-off refuses at most this share of tuning answerables
MAX_REFUSED_ANSWERABLE = 0.02


def collect(name: str, corpus: dict, path: Path, work: Path) -> list[dict]:
    """Rows of (id, answerable, signals or None) from running the pipeline, cached per set and
    per version of what computes them (the questions, the chatbot's code, the settings): a cache
    from older code would refit the weights on signals the product no longer computes."""
    settings = load_settings(generator="extractive", **corpus)
    # the whole package (evaluation/ judges citations) and the weights that flag passages
    code = [*sorted((ROOT / "chatbot").rglob("*.py")), instructions.DETECTOR_FILE]
    key = hashlib.sha256(b"".join(f.read_bytes() for f in [path, *code])
                         + repr(settings).encode()).hexdigest()[:12]
    cache = work / (name.replace(" ", "_").replace("(", "").replace(")", "") + f"-{key}.jsonl")
    if cache.exists():
        return [json.loads(line) for line in cache.read_text().splitlines()]
    n = len(FEATURES)
    everything_full = Scorer((0.0,) * n, 0.0, (0.0,) * n, (1.0,) * n, full=0.0, partial=0.0)
    bot = Chatbot(settings, scorer=everything_full)
    cases, _ = evaluation.load_cases(path.read_text(encoding="utf-8").splitlines())
    rows = []
    for case in cases:
        a = bot.answer(case.question, list(case.history))
        sig = {k: a.signals[k] for k in FEATURES} if a.signals else None
        cited = any(evaluation.passage_matches(c, e) for c in a.to_dict()["citations"]
                    for e in case.expected_sources)
        rows.append({"id": case.id, "answerable": case.answerable, "signals": sig,
                     "code": a.outcome.code.value, "cites_expected": cited})
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def matrix(rows: list[dict], features=FEATURES) -> tuple[np.ndarray, np.ndarray]:
    scored = [r for r in rows if r["signals"]]
    x = np.array([[r["signals"][f] for f in features] for r in scored], dtype="float64")
    return x, np.array([r["answerable"] for r in scored], dtype=bool)


def fit(rows: list[dict], features=FEATURES) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    x, y = matrix(rows, features)
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3)  # a constant stays constant
    model = LogisticRegression(C=1.0, class_weight="balanced").fit((x - mean) / scale, y)
    return model.coef_[0], float(model.intercept_[0]), mean, scale


def probabilities(rows: list[dict], coef, bias, mean, scale,
                  features=FEATURES) -> list[float | None]:
    out = []
    for r in rows:
        if not r["signals"]:
            out.append(None)  # refused before scoring (no close passage, no statement)
            continue
        z = (np.array([r["signals"][f] for f in features]) - mean) / scale
        out.append(float(1 / (1 + np.exp(-(z @ coef + bias)))))
    return out


def outcomes(rows: list[dict], probs: list[float | None], full: float, partial: float) -> dict:
    """The issue's targets, from decisions at these cut-offs."""
    def decide(p):
        return "none" if p is None or p < partial else ("full" if p >= full else "partial")

    ans = [(r, decide(p)) for r, p in zip(rows, probs) if r["answerable"]]
    una = [decide(p) for r, p in zip(rows, probs) if not r["answerable"]]
    n_a, n_u = max(1, len(ans)), max(1, len(una))
    return {"answerable": len(ans), "unanswerable": len(una),
            "full": round(sum(d == "full" for _, d in ans) / n_a, 3),
            "full_cited": round(sum(d == "full" and r["cites_expected"] for r, d in ans) / n_a, 3),
            "partial_or_refused": round(sum(d != "full" for _, d in ans) / n_a, 3),
            "refused": round(sum(d == "none" for _, d in ans) / n_a, 3),
            "una_safe": round(sum(d != "full" for d in una) / n_u, 3),
            "una_full": sum(d == "full" for d in una),
            "una_refused": round(sum(d == "none" for d in una) / n_u, 3)}


def choose_cutoffs(rows: list[dict], probs: list[float | None]) -> tuple[float, float]:
    """full: the cut-off with the lowest cost (FULL_ERROR_COST per unanswerable answered in full,
    1 per answerable not answered in full); partial: the highest cut-off that refuses at most
    MAX_REFUSED_ANSWERABLE of the answerable questions."""
    scored = [(p, r["answerable"]) for r, p in zip(rows, probs) if p is not None]
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)

    def cost(t):
        return sum(FULL_ERROR_COST * (p >= t) for p, a in scored if not a) + \
            sum(p < t for p, a in scored if a)
    full = float(min(grid, key=lambda t: (cost(t), -t)))
    answerable = sorted(p for p, a in scored if a)
    allowed = int(MAX_REFUSED_ANSWERABLE * len(answerable))
    partial = float(min(full, np.floor(answerable[allowed] * 100) / 100)) if answerable else 0.0
    return full, partial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit on tuning sets, write weights")
    parser.add_argument("--work", type=Path, default=Path("/tmp/answerability-bench"))
    parser.add_argument("--only", help="only sets whose name contains this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = {name: collect(name, corpus, path, args.work)
            for name, (corpus, path, role) in SETS.items()
            if path.exists() and Path(corpus["corpus_dir"]).exists()
            and (not args.only or args.only in name)}
    tuning = [r for name, rows in data.items() if SETS[name][2] == "tuning" for r in rows]
    if args.fit:
        coef, bias, mean, scale = fit(tuning)
        full, partial = choose_cutoffs(tuning, probabilities(tuning, coef, bias, mean, scale))
        answerability.WEIGHTS_FILE.write_text(json.dumps({
            "features": list(FEATURES), "weights": coef.round(4).tolist(),
            "bias": round(bias, 4), "mean": mean.round(4).tolist(),
            "scale": scale.round(4).tolist(),
            "fitted_on": [n for n in data if SETS[n][2] == "tuning"],
            "suggested_cutoffs": {"answer_full": full, "answer_partial": partial}},
            indent=1) + "\n")
        print(f"wrote {answerability.WEIGHTS_FILE}; suggested answer_full={full} "
              f"answer_partial={partial}")
    settings = load_settings()
    weights = json.loads(answerability.WEIGHTS_FILE.read_text())
    model = [np.array(weights[k]) for k in ("weights", "bias", "mean", "scale")]
    print(f"cut-offs: full {settings.answer_full}, partial {settings.answer_partial}\n")
    print("| set | role | answerable | full | full, right passage cited | partial | refused "
          "| unanswerable | refused | partial | full |\n|" + "---|" * 11)
    for name, rows in data.items():
        r = outcomes(rows, probabilities(rows, *model), settings.answer_full,
                     settings.answer_partial)
        print(f"| {name} | {SETS[name][2]} | {r['answerable']} | {r['full']:.2f} | "
              f"{r['full_cited']:.2f} | {r['partial_or_refused'] - r['refused']:.2f} | "
              f"{r['refused']:.2f} | {r['unanswerable']} | {r['una_refused']:.2f} | "
              f"{r['una_safe'] - r['una_refused']:.2f} | {r['una_full']} |")
    print("\nablation (refit on tuning without one signal; cut-offs re-chosen on tuning):")
    for drop in (None, *FEATURES):
        feats = tuple(f for f in FEATURES if f != drop)
        m = fit(tuning, feats)
        full, partial = choose_cutoffs(tuning, probabilities(tuning, *m, feats))
        for name, rows in data.items():
            if SETS[name][2] == "blind":
                res = outcomes(rows, probabilities(rows, *m, feats), full, partial)
                print(f"  without {drop or '-':10s} {name:22s} full {res['full']} "
                      f"cited {res['full_cited']} ans-not-full {res['partial_or_refused']} "
                      f"una-safe {res['una_safe']} una-full {res['una_full']}")


if __name__ == "__main__":
    main()
