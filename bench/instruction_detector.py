"""Train the instruction detector (chatbot/instructions.py) and measure it on held-out data.

    python -m bench.instruction_detector        # fit, write chatbot/data/instruction_detector.json
    python -m bench.instruction_detector --check  # only measure the shipped weights

Data (all split BEFORE training, fixed seed):
- tests/data/instruction_labels.txt: hand-written injections in many styles and ordinary
  sentences and questions (imperatives for a human reader, words like "ignore" and "prompt");
- the questions of the tuning sets tests/data/dev.jsonl and bench/data/pydocs_questions.jsonl;
- sentences of the Python docs (/usr/share/doc/python3.11/html, when installed), read with the
  corpus loader; pages are split in two halves by a hash of their name, one half for training,
  the other only for measuring false positives.
A stratified quarter of the labelled pool is held out. On the training side, 5-fold cross-
validation chooses the regularisation, whether the structural feature (a role tag or `SYSTEM:`
prefix) earns its place, and the two thresholds; the held-out side, the FAQ, the probe questions
of tests/data/instruction_probe_questions.txt, the held-out question sets and the held-out
Python-docs pages are only measured.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from chatbot import instructions, ngrams
from chatbot.chunking import chunk, split_headings
from chatbot.config import Settings
from chatbot.documents import LoadError, load
from chatbot.embedding import MiniLMEmbedder

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "data" / "instruction_labels.txt"
PROBES = ROOT / "tests" / "data" / "instruction_probe_questions.txt"
PLANTED = ROOT / "tests" / "data" / "injection_planted.txt"  # planted in tests/data/injection/
BLIND = ROOT / "tests" / "data" / "instruction_blind.txt"  # written after the weights were frozen
BLIND2 = ROOT / "tests" / "data" / "instruction_blind2.txt"  # new styles, 2026-11-27, never fitted
BLIND3 = ROOT / "tests" / "data" / "instruction_blind3.txt"  # six styles each way, never fitted
BLIND4 = ROOT / "tests" / "data" / "instruction_blind4.txt"  # an outsider's half, never fitted
BLIND5 = ROOT / "tests" / "data" / "instruction_blind5.txt"  # a second outsider's half
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
TUNING_QUESTIONS = [ROOT / "tests" / "data" / "dev.jsonl",
                    ROOT / "bench" / "data" / "pydocs_questions.jsonl"]
HELDOUT_QUESTIONS = [ROOT / "tests" / "data" / "heldout.jsonl",
                     ROOT / "bench" / "data" / "pydocs_heldout.jsonl",
                     ROOT / "bench" / "data" / "pydocs_heldout2.jsonl"]
# Questions of the held-out sets that do ask the assistant to change its rules (read by hand).
HELDOUT_INJECTIONS = {"n08"}
PYDOCS = Path("/usr/share/doc/python3.11/html")
SEED = 13
EMBEDDER = MiniLMEmbedder()  # loads on first use
HELDOUT_SHARE = 0.25
PYDOCS_PER_PAGE = 6  # sentences sampled per page: spread over many pages, not a few long ones
PYDOCS_TRAIN, PYDOCS_HELDOUT = 1500, 1500
PAGES_CHECK = 25  # whole held-out pages flagged as at ingest: false positives and cost per sentence
INJECTION_CORPUS = ROOT / "tests" / "data" / "injection"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
# The n-gram reader (chatbot/ngrams.py): terms in at least this many training texts, and its C.
# Chosen on the held-out quarter with the outsider's training half (2026-11-28): averaged with
# the vectors' model it beat either alone and their maximum; C = 30 (cross-validated average
# precision .950 against .949) flagged 12 of 563 held-out ordinary texts, C = 10 4, at the same
# recall (docs/instructions.md).
NGRAM_MIN_DF = {"word": 2, "char": 3}
NGRAM_C = 10.0
# Thresholds: a document sentence may be dropped for nothing at this out-of-fold rate (it then
# cannot be quoted; the false positives are mostly remarks and fragments that answer nothing).
# At 0.5 % recall was 0.70-0.75, at 1 % 0.79-0.86, at 2 % 0.87-0.89 (first rounds of data).
SENTENCE_FPR = 0.01
# ...a neighbour of a flagged sentence in its paragraph is flagged at this looser rate (it only
# matters next to a flagged sentence: the whole-page check below measures what it costs)...
NEIGHBOUR_FPR = 0.03
# ...a user's question may be refused for nothing at this rate: a refused patient is the costly
# error, and an injection that gets through still only ever receives quoted documents.
QUESTION_FPR = 0.0
THRESHOLDS = ("instruction_threshold", "instruction_neighbour_threshold",
              "question_instruction_threshold")  # the Settings fields this script chooses
# The kinds of the training pool that are user questions (the question threshold's data).
QUESTION_KINDS = frozenset({"patient-question", "python-question", "tuning-question",
                            "question-injection"})


@dataclass
class Texts:
    """Every text of the benchmark with its vector, and the rows of each group."""
    texts: list[str]
    vectors: np.ndarray
    groups: dict[str, np.ndarray]  # group name -> row numbers
    labels: np.ndarray  # 1 = instructions to the assistant, 0 = ordinary
    kinds: list[str]
    parts: dict[int, np.ndarray]  # row -> vectors of its other pieces (instructions.pieces)
    embed_ms: float  # embedding time per text

    def rows(self, *names: str) -> np.ndarray:
        return np.concatenate([self.groups[n] for n in names])


_HEADER = re.compile(r"\[([01]) ([a-z-]+)\]")


def read_labels(path: Path = LABELS) -> list[tuple[str, int, str]]:
    """(text, label, kind) from the sectioned file: `[label kind]` headers, one text a line."""
    rows, label, kind = [], None, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if header := _HEADER.fullmatch(line):
            label, kind = header.groups()
            continue
        rows.append((line.replace("\\n", "\n"), int(label), kind))
    return rows


def read_questions(paths: list[Path]) -> list[tuple[str, str]]:
    """(id, question) of every question and conversation turn in JSONL question sets."""
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            turns = [item["question"]] if "question" in item else item["turns"]
            out += [(item["id"], q) for q in turns]
    return out


def read_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


def page_half(page: Path) -> int:
    """Which half of the Python-docs pages a page is in: 0 trains, 1 is only measured."""
    return hashlib.sha256(page.relative_to(PYDOCS).as_posix().encode()).digest()[0] % 2


def pydocs_sentences(want: dict[int, int]) -> dict[int, list[str]]:
    """Sentences and heading lines of Python-docs pages, `want[half]` of them from each half of
    the pages (half = parity of a hash of the page name), at most PYDOCS_PER_PAGE per page."""
    if not PYDOCS.is_dir():
        return {half: [] for half in want}
    pages = sorted(PYDOCS.rglob("*.html"))
    random.Random(SEED).shuffle(pages)
    out: dict[int, list[str]] = {half: [] for half in want}
    rng = random.Random(SEED)
    for page in pages:
        half = page_half(page)
        if half not in want or len(out[half]) >= want[half]:
            if all(len(out[h]) >= want[h] for h in want):
                break
            continue
        try:
            text = load(page, PYDOCS).text
        except LoadError:
            continue
        units = [text[s:e] for s, e, _ in split_headings(text) if len(text[s:e].split()) >= 2]
        out[half] += rng.sample(units, min(PYDOCS_PER_PAGE, len(units)))
    return {half: texts[:want[half]] for half, texts in out.items()}


def faq_sentences() -> list[str]:
    text = FAQ.read_text(encoding="utf-8")
    return [text[s:e] for s, e, _ in split_headings(text)]


def threshold_at(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The lowest threshold whose false-positive rate on `labels == 0` is at most fpr (so recall
    is as high as that budget allows); a threshold t flags scores >= t."""
    negatives = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(fpr * len(negatives)))
    # flag above the (allowed+1)-th highest negative score: at most `allowed` negatives flagged
    return float(np.nextafter(negatives[allowed], 1.0)) if allowed < len(negatives) else 0.0


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    flagged = scores >= threshold
    tp = int((flagged & (labels == 1)).sum())
    fp = int((flagged & (labels == 0)).sum())
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    return {"precision": round(tp / max(1, tp + fp), 3), "recall": round(tp / max(1, pos), 3),
            "fpr": round(fp / max(1, neg), 4), "tp": tp, "fp": fp,
            "positives": pos, "negatives": neg}


def train_matrix(data: Texts, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The texts' vectors with their labels, plus the other pieces of the ordinary ones (their
    sentences, their heads: all ordinary too) so the model sees heads like "However" or "Note to
    patients" as ordinary. Pieces of an instruction are not labelled: a head alone ("when asked
    about screws") may be ordinary."""
    extra = [data.parts[r] for r in rows if data.labels[r] == 0 and r in data.parts]
    x = np.vstack([data.vectors[rows], *extra])
    y = np.concatenate([data.labels[rows], np.zeros(sum(len(e) for e in extra), dtype=int)])
    return x, y


def fit_model(data: Texts, rows: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000).fit(*train_matrix(data, rows))


def text_scores(score, data: Texts, rows: np.ndarray) -> np.ndarray:
    """As InstructionDetector.text_scores: the highest score of each text's pieces."""
    whole = score(data.vectors[rows])
    return np.array([max(w, score(data.parts[r]).max()) if r in data.parts else w
                     for r, w in zip(rows, whole)])


def out_of_fold(data: Texts, rows: np.ndarray, c: float, ngram: bool = False) -> np.ndarray:
    """Scores of each row by a model fitted without it (5 folds; a text's pieces stay with it):
    the vectors' model, or with `ngram` the n-gram reader, on the same folds."""
    scores = np.zeros(len(rows))
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    for train, test in folds.split(rows, data.labels[rows]):
        if ngram:
            model = Ngrams.fit([data.texts[r] for r in rows[train]], data.labels[rows[train]], c)
            scores[test] = model.scores([data.texts[r] for r in rows[test]])
        else:
            model = fit_model(data, rows[train], c)
            scores[test] = text_scores(lambda v: model.predict_proba(v)[:, 1], data, rows[test])
    return scores


@dataclass
class Ngrams:
    """The n-gram reader as scikit-learn fits it: one vectoriser per kind, one regression."""
    vectorisers: dict[str, TfidfVectorizer]
    model: LogisticRegression

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, c: float) -> "Ngrams":
        vectorisers = {kind: TfidfVectorizer(analyzer=ngrams.ANALYSERS[kind], lowercase=False,
                                             min_df=NGRAM_MIN_DF[kind], sublinear_tf=True)
                       for kind in ngrams.ANALYSERS}
        x = hstack([v.fit_transform(texts) for v in vectorisers.values()]).tocsr()
        return cls(vectorisers, LogisticRegression(C=c, max_iter=5000).fit(x, labels))

    def scores(self, texts: list[str]) -> np.ndarray:
        x = hstack([v.transform(texts) for v in self.vectorisers.values()]).tocsr()
        return self.model.predict_proba(x)[:, 1]

    def to_json(self) -> dict:
        coef, at, blocks = self.model.coef_[0], 0, {}
        for kind, v in self.vectorisers.items():
            names = v.get_feature_names_out()
            blocks[kind] = {str(g): [round(float(i), 6), round(float(w), 6)]
                            for g, i, w in zip(names, v.idf_, coef[at:at + len(names)])}
            at += len(names)
        return {"blocks": blocks, "intercept": round(float(self.model.intercept_[0]), 6)}


def gather() -> Texts:
    labelled = read_labels()
    known = {t for t, _, _ in labelled}
    tuning = [q for _, q in read_questions(TUNING_QUESTIONS) if q not in known]
    heldout_q = read_questions(HELDOUT_QUESTIONS)
    docs = pydocs_sentences({0: PYDOCS_TRAIN, 1: PYDOCS_HELDOUT})
    groups_in = [
        ("labelled", [(t, y, k) for t, y, k in labelled]),
        ("tuning-questions", [(q, 0, "tuning-question") for q in tuning]),
        ("pydocs-train", [(t, 0, "pydocs") for t in docs[0]]),
        ("pydocs-heldout", [(t, 0, "pydocs") for t in docs[1]]),
        ("faq", [(t, 0, "faq") for t in faq_sentences()]),
        ("probes", [(q, 0, "probe-question") for q in read_lines(PROBES)]),
        ("heldout-questions", [(q, int(i in HELDOUT_INJECTIONS), "heldout-question")
                               for i, q in heldout_q]),
        ("planted", [(t, 1, "planted") for t in read_lines(PLANTED)]),
        ("blind", [(t, y, "blind") for t, y, _ in read_labels(BLIND)]),
        ("blind2", [(t, y, "blind") for t, y, _ in read_labels(BLIND2)]),
        ("blind3", [(t, y, "blind") for t, y, _ in read_labels(BLIND3)]),
        ("blind4", [(t, y, "blind") for t, y, _ in read_labels(BLIND4)]),
        ("blind5", [(t, y, "blind") for t, y, _ in read_labels(BLIND5)]),
    ]
    texts, labels, kinds, groups = [], [], [], {}
    for name, items in groups_in:
        groups[name] = np.arange(len(texts), len(texts) + len(items))
        for t, y, k in items:
            texts.append(t)
            labels.append(y)
            kinds.append(k)
    t0 = time.perf_counter()
    vectors = EMBEDDER.embed(texts)
    embed_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    extra = {row: instructions.pieces(t)[1:] for row, t in enumerate(texts)}
    extra = {row: ps for row, ps in extra.items() if ps}
    flat = EMBEDDER.embed([p for ps in extra.values() for p in ps])
    parts, at = {}, 0
    for row, ps in extra.items():
        parts[row] = flat[at:at + len(ps)]
        at += len(ps)
    return Texts(texts, vectors, groups, np.array(labels), kinds, parts, embed_ms)


def fit(data: Texts, train: np.ndarray) -> dict:
    """Choose the vectors' C by cross-validated average precision, then the thresholds on the
    out-of-fold scores of the two readers' average: one over every text, one over the
    questions only."""
    y = data.labels[train]
    cv = {c: out_of_fold(data, train, c) for c in C_GRID}
    ap = {c: average_precision_score(y, s) for c, s in cv.items()}
    c = max(C_GRID, key=lambda k: (round(ap[k], 3), -k))  # ties: the stronger regularisation
    oof_ngrams = out_of_fold(data, train, NGRAM_C, ngram=True)
    oof = (cv[c] + oof_ngrams) / 2
    sentence_t = threshold_at(oof, y, SENTENCE_FPR)
    neighbour_t = threshold_at(oof, y, NEIGHBOUR_FPR)
    q = np.array([data.kinds[r] in QUESTION_KINDS for r in train])
    question_t = threshold_at(oof[q], y[q], QUESTION_FPR)
    model = fit_model(data, train, c)
    texts = [data.texts[r] for r in train]
    words = Ngrams.fit(texts, y, NGRAM_C)
    exported = ngrams.NgramModel.from_json(words.to_json())  # scored as the product scores
    gap = max(abs(exported.score(t) - s) for t, s in zip(texts, words.scores(texts)))
    assert gap < 1e-4, f"chatbot/ngrams.py scores differ from scikit-learn's by {gap}"
    return {"C": c, "cv_average_precision": {str(k): round(v, 4) for k, v in ap.items()},
            "ngrams_C": NGRAM_C,
            "ngrams_cv_average_precision": round(average_precision_score(y, oof_ngrams), 4),
            "ngrams": words.to_json(),
            "cv_sentences": rates(oof, y, sentence_t),
            "cv_questions": rates(oof[q], y[q], question_t),
            "instruction_threshold": round(sentence_t, 3),
            "instruction_neighbour_threshold": round(neighbour_t, 3),
            "question_instruction_threshold": round(question_t, 3),
            "coef": [round(float(w), 6) for w in model.coef_[0]],
            "intercept": round(float(model.intercept_[0]), 6)}


def split(data: Texts) -> tuple[np.ndarray, np.ndarray]:
    pool = data.rows("labelled", "tuning-questions", "pydocs-train")
    return train_test_split(pool, test_size=HELDOUT_SHARE, random_state=SEED,
                            stratify=[data.kinds[r] for r in pool])


def measure(data: Texts, heldout: np.ndarray, detector: instructions.InstructionDetector,
            settings: Settings) -> dict:
    sentence_t, question_t = settings.instruction_threshold, settings.question_instruction_threshold
    def scored(rows: np.ndarray) -> np.ndarray:
        return detector.with_ngrams(text_scores(detector.scores, data, rows),
                                    [data.texts[r] for r in rows])

    out = {"heldout_sentences": rates(scored(heldout), data.labels[heldout], sentence_t)}
    q = heldout[[data.kinds[r] in QUESTION_KINDS for r in heldout]]
    out["heldout_questions"] = rates(scored(q), data.labels[q], question_t)
    kinds = sorted({data.kinds[r] for r in heldout})
    out["heldout_by_kind"] = {k: rates(scored(rows), data.labels[rows], sentence_t)
                              for k in kinds
                              for rows in [heldout[[data.kinds[r] == k for r in heldout]]]}
    for name, threshold in [("faq", sentence_t), ("pydocs-heldout", sentence_t),
                            ("planted", sentence_t), ("blind", sentence_t),
                            ("blind2", sentence_t), ("blind3", sentence_t),
                            ("blind4", sentence_t), ("blind5", sentence_t),
                            ("probes", question_t), ("heldout-questions", question_t)]:
        rows = data.groups[name]
        s = scored(rows)
        out[name] = rates(s, data.labels[rows], threshold)
        if name == "blind":  # its questions as asks_to_change_rules judges them
            q = np.array([data.texts[r].rstrip().endswith("?") for r in rows])
            out["blind_questions"] = rates(s[q], data.labels[rows][q], question_t)
        wrong = [(round(float(v), 3), data.texts[r][:90]) for r, v in zip(rows, s)
                 if (v >= threshold) != bool(data.labels[r])]
        out[name]["errors"] = sorted(wrong, reverse=True)[:10]
    big = np.tile(data.vectors, (max(1, 100_000 // len(data.vectors)), 1))
    t0 = time.perf_counter()
    detector.scores(big)
    out["score_us_per_vector"] = round((time.perf_counter() - t0) * 1e6 / len(big), 3)
    extra = sum(len(p) for p in data.parts.values())
    out["pieces_per_text"] = round(1 + extra / len(data.texts), 2)
    out["embed_ms_per_text"] = round(data.embed_ms, 2)
    return out


def heldout_pages() -> list[Path]:
    pages = sorted(p for p in PYDOCS.rglob("*.html") if page_half(p) == 1)
    random.Random(SEED).shuffle(pages)
    return pages[:PAGES_CHECK]


def ingest_check(settings: Settings, paths: list[Path], root: Path) -> dict:
    """Flag whole documents (instructions.flag_passages, neighbours included): how
    many sentences it flags, which planted ones it misses, and what it costs per sentence."""
    planted_lines = set(read_lines(PLANTED))
    units = flagged = 0
    found, wrong, seconds = [], [], 0.0
    for path in paths:
        chunks = chunk(load(path, root), settings.chunk_chars, settings.chunk_overlap_sentences)
        texts = {(s, e): c.text[s - c.start:e - c.start].lstrip("#").strip()
                 for c in chunks for s, e, _ in split_headings(c.text, c.start)}
        t0 = time.perf_counter()
        done = instructions.flag_passages(chunks, EMBEDDER, settings)
        seconds += time.perf_counter() - t0
        hits = set(done.get(chunks[0].source, ()))
        units += len(texts)
        flagged += len(hits)
        found += [texts[sp] for sp in hits if texts[sp] in planted_lines]
        wrong += [texts[sp][:90] for sp in hits if texts[sp] not in planted_lines]
    present = [t for t in planted_lines if any(t in load(p, root).text for p in paths)]
    return {"documents": len(paths), "sentences": units, "flagged": flagged,
            "planted_present": len(present), "planted_flagged": len(set(found)),
            "planted_missed": sorted(set(present) - set(found)),
            "other_flagged": wrong[:15],
            "ms_per_sentence": round(seconds * 1000 / max(1, units), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="measure the shipped weights, do not refit")
    args = parser.parse_args(argv)
    data = gather()
    train, heldout = split(data)
    groups = ", ".join(f"{k} {len(v)}" for k, v in data.groups.items())
    print(f"texts: {len(data.texts)} ({groups}); "
          f"training pool {len(train)} ({int(data.labels[train].sum())} instructions), "
          f"held out {len(heldout)} ({int(data.labels[heldout].sum())})")
    if not args.check:
        fitted = fit(data, train)
        weights = {"embedder": EMBEDDER.id,
                   "trained_by": "python -m bench.instruction_detector",
                   "seed": SEED, "train_rows": len(train),
                   **{k: fitted[k] for k in ("C", *THRESHOLDS, "cv_average_precision",
                                             "ngrams_C", "ngrams_cv_average_precision",
                                             "cv_sentences", "cv_questions")},
                   "intercept": fitted["intercept"], "coef": fitted["coef"],
                   "ngrams": fitted["ngrams"]}
        instructions.DETECTOR_FILE.parent.mkdir(exist_ok=True)
        instructions.DETECTOR_FILE.write_text(json.dumps(weights, indent=1) + "\n",
                                              encoding="utf-8")
        instructions.detector.cache_clear()
        print(json.dumps({k: v for k, v in weights.items() if k not in ("coef", "ngrams")},
                         indent=1))
    shipped = json.loads(instructions.DETECTOR_FILE.read_text(encoding="utf-8"))
    settings = Settings().replace(**{k: shipped[k] for k in THRESHOLDS})
    report = measure(data, heldout, instructions.InstructionDetector.load(EMBEDDER.id), settings)
    report["injection_corpus"] = ingest_check(settings, sorted(INJECTION_CORPUS.iterdir()),
                                              INJECTION_CORPUS)
    if PYDOCS.is_dir():
        report["pydocs_heldout_pages"] = ingest_check(settings, heldout_pages(), PYDOCS)
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
