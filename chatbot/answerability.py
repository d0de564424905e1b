"""Do the retrieved passages answer the question? A few measured signals, one calibrated score,
three outcomes.

No single word rule survives questions written by people who do not share the documents'
vocabulary ("metalwork" for hardware, "my op" for surgery), so the decision is a logistic
regression over a handful of continuous signals, fitted on tuning questions only
(`python -m bench.answerability --fit` writes `chatbot/data/answerability.json`) and reported on
blind ones. The probability maps to an outcome:

  full     the passages answer it: a checked, cited answer
  partial  they cover the topic but not exactly this: say what is missing, quote the nearest
  none     they do not cover it: refuse, saying where we looked

A partial answer is the safe middle for a patient: it never claims the documents answer what
they do not, and it still shows what they do say.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import AbstractSet, Callable, Container, Iterable, Mapping, Sequence

import numpy as np

from chatbot import grounding
from chatbot.text import STOPWORDS, content_words, stem, words

WEIGHTS_FILE = Path(__file__).resolve().parent / "data" / "answerability.json"
FEATURES = ("dense", "sentence", "title", "term_min", "term_gap", "literals", "quantity")
# Questions that ask for an amount; answered only by a sentence that gives one.
_ASKS_QUANTITY = re.compile(
    r"\bhow (many|much|long|often|soon|old|far)\b|\bwhat (percentage|percent|proportion|dose|"
    r"dosage|age)\b|\b(how likely|success rate|odds|chances?)\b", re.I)
# ... and those that ask for a share, answered only by a sentence that gives one: "What
# percentage of spinal fusions are successful?" was answered in full from "two levels".
# "How much faster is 3.13 than 3.11?" asks for a ratio too, which "removed in Python 3.13" is not.
_ASKS_SHARE = re.compile(r"\b(percentage|percent|per cent|proportion|success rate|fraction|"
                         r"how (?:much|many times) (?:faster|slower|quicker))\b", re.I)
# ... and those that ask in a unit of time, answered only by a number in that unit: "How many
# hours does a spinal fusion operation usually last?" was answered in full from "two levels",
# "how many weeks does it take to recover?" from "8 years". Only when that is what the question
# asks, at the start of a clause: "how can I work out how many days there are between two
# dates?" asks for a way, and `date` arithmetic answers it.
_ASKS_UNIT = re.compile(r"(?:^|[,.;:?!]\s*|\b(?:and|so|but|then)\s+)how many "
                        r"(second|minute|hour|day|week|month|year)s?\b", re.I)
# ... and those that ask for a count of a thing, answered only by a number of that thing: "how
# many kilos am I allowed to lift?" is not answered by "two levels of the spine". Only at the
# start of a clause, as for a unit ("count how many times each word shows up" asks for a way).
_ASKS_COUNT = re.compile(r"(?:^|[,.;:?!]\s*|\b(?:and|so|but|then|roughly|about)\s+)how many "
                         r"((?:[a-z][\w-]*\s+){0,2}[a-z][\w-]*)", re.I)
_GIVES_SHARE = re.compile(r"\d\s*%|\bper ?cent\b|\b\w+ (in|out of) (every )?\w+ (patients|"
                          r"people|cases)\b|\b(half|third|quarter|majority|minority)\b|"
                          r"\b\d+(\.\d+)?\s*(x|times)\b", re.I)
MISSING_NAMED = 3  # a partial answer names at most this many missing words


class Coverage(str, Enum):
    FULL = "full"
    PARTIAL = "partial"
    NONE = "none"


@dataclass(frozen=True)
class Signals:
    """What the scorer reads, each in a fixed range so weights stay comparable."""
    dense: float  # cosine of the question and the closest chunk
    sentence: float  # cosine of the question and the closest statement in the top passages
    title: float  # cosine of the question and the closest heading (a FAQ's own question)
    term_min: float  # how well the least-covered specific question word is covered (1 = literally)
    term_gap: float  # the largest weight x (1 - coverage) of a question word (occlusion)
    literals: float  # numbers and code names of the question absent from the passages (count)
    quantity: float  # 1 if the question asks for an amount and no top sentence gives one
    missing: tuple[str, ...] = ()  # the uncovered words that carry the question, named if partial
    elsewhere: tuple[str, ...] = ()  # those of them the corpus has outside these passages

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in FEATURES], dtype="float64")

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else list(v))
                for k, v in asdict(self).items()}


def term_coverage(question: str, evidence: str, embed: Callable[[list[str]], np.ndarray],
                  common: Container[str] = frozenset(),
                  ignore: Iterable[str] = grounding.QUESTION_FRAME,
                  aliases: Mapping[str, AbstractSet[str]] = MappingProxyType({})
                  ) -> dict[str, float]:
    """Each content word of the question -> how well the evidence covers it: 1 when its stem (or
    a long shared prefix) is there, or a term the corpus's glossary says it stands for
    (`aliases`: "metal" for hardware), or the corpus uses it everywhere; else the cosine of the
    word's embedding to the closest evidence word (vertebrae ~ spine is high, ibuprofen ~ anything
    in a spine FAQ is low)."""
    vocab = grounding.vocabulary(evidence)
    frame = {stem(w) for w in ignore}
    asked = [w for w in dict.fromkeys(content_words(question))
             if stem(w) not in frame and not w[0].isdigit() and len(w) > 2]
    cover = {w: 1.0 for w in asked if grounding.matches(stem(w), vocab) or stem(w) in common
             or any(t in vocab for t in aliases.get(stem(w), ()))}
    rest = [w for w in asked if w not in cover]
    if rest:
        pool = sorted({w for w in content_words(evidence) if len(w) > 2})
        sims = embed(rest) @ embed(pool).T if pool else np.zeros((len(rest), 1))
        cover.update({w: float(max(0.0, row.max())) for w, row in zip(rest, sims)})
    return {w: cover[w] for w in asked}


def weight(question: str, asked: Sequence[str],
           embed: Callable[[list[str]], np.ndarray]) -> dict[str, float]:
    """How much of the question's meaning each word carries: 1 - cosine between the question and
    the question without the word (occlusion). "drive" in "when am I allowed to drive again?"
    carries much; "explain" in "would that explain why my pain got worse?" little, whatever its
    rarity in English, which is what a word list or a frequency cut-off cannot tell."""
    if not asked:
        return {}
    variants = [re.sub(rf"(?i)\b{re.escape(w)}\b", " ", question) for w in asked]
    vectors = embed([question, *variants])
    return {w: float(max(0.0, 1.0 - vectors[0] @ v)) for w, v in zip(asked, vectors[1:])}


# "Once" that starts a clause ("Once the bone has fused, ...") says when, not how often: it
# answered "how long does it take for the bones to fuse?" in full on a fresh blind set.
_WHEN_ONCE = re.compile(r"\bonce\s+(?:the|you|your|it|its|they|their|we|he|she|this|that|"
                        r"these|those|my|our|all|every|each)\b", re.I)


def _is_number(word: str) -> bool:
    """A number in digits or in words ("8", "two", "twice")."""
    return word[0].isdigit() or word in grounding.NUMBER_WORDS


def gives_quantity(text: str) -> bool:
    """A number, in digits or in words ("8 years", "two levels", "twice"). A unit without one
    gives no amount: "several days or weeks afterward" does not say how many days in hospital,
    nor "a percentage of patients" what percentage."""
    return any(_is_number(w) for w in words(_WHEN_ONCE.sub(" ", text)))


def gives_share(text: str) -> bool:
    """A share or rate: "30%", "one in five patients", "half", "1.25x". A bare number is not
    one ("at two levels of the spine" says nothing of how many fusions succeed)."""
    return _GIVES_SHARE.search(text) is not None


def counted(question: str) -> list[str]:
    """What a question asks the count of, word by word ("how many compiled regex patterns does
    ..." -> compiled, regex, patterns), when it asks for one at the start of a clause; else []."""
    m = _ASKS_COUNT.search(question.strip())
    if not m:
        return []
    asked = []
    for w in m.group(1).lower().split():
        if w in STOPWORDS:  # "does", "are", "in", "of": the thing's name has ended
            break
        asked.append(w)
    return asked


def gives_count_of(text: str, things: Sequence[str]) -> bool:
    """A number, in digits or words, within two words before one of `things` (by stem): "512
    compiled patterns", "two levels"."""
    stems = {stem(t) for t in things}
    said = words(text)
    return any(_is_number(w) and any(stem(x) in stems for x in said[i + 1:i + 4])
               for i, w in enumerate(said))


def gives_amount_in(text: str, unit: str) -> bool:
    """A number, in digits or words, of `unit` ("six weeks", "6-8 weeks" for week)."""
    number = "|".join(sorted(grounding.NUMBER_WORDS)) + r"|\d+(?:\.\d+)?"
    return re.search(rf"\b(?:{number})[\s-]*{unit}s?\b", text, re.I) is not None


def signals(question: str, dense: float, sentence: float, title: float, evidence: str,
            top_sentences: Sequence[str], embed: Callable[[list[str]], np.ndarray],
            common: Container[str] = frozenset(), rare_zipf: float = 5.3,
            synonym_similarity: float = 0.6, name_share: float = 0.33,
            corpus: AbstractSet[str] = frozenset(),
            aliases: Mapping[str, AbstractSet[str]] = MappingProxyType({}),
            names: AbstractSet[str] | None = None) -> Signals:
    """The signals for one question against its closest passages (`evidence`, their text) and the
    sentences that match it best (`top_sentences`); the cosines come from the caller, which
    has the vectors already. `corpus`: the stems of every document; a missing word it has is
    also `elsewhere` ("The documents do not mention chiropractor" would be untrue when a
    passage that was not retrieved says "chiropractic care"), as is one whose glossary term it
    has ("metal": hardware); it counts as a gap all the same. `aliases`: the corpus's glossary
    (`term_coverage`). `names`: the CamelCase names the corpus writes (`missing_literals`)."""
    cover = term_coverage(question, evidence, embed, common, aliases=aliases)
    rare = {w: c for w, c in cover.items() if grounding.english_zipf(w) < rare_zipf}
    carried = weight(question, list(cover), embed)
    gaps = {w: carried[w] * (1.0 - cover[w]) for w in cover}
    literals = grounding.missing_literals(question, evidence, names)
    share, unit = _ASKS_SHARE.search(question), _ASKS_UNIT.search(question.strip())
    things = counted(question)
    gives = (gives_share if share else
             (lambda s: gives_amount_in(s, unit.group(1))) if unit else
             (lambda s: gives_count_of(s, things)) if things else gives_quantity)
    asks = bool(share or _ASKS_QUANTITY.search(question))
    quantity = float(asks and not any(gives(grounding.unnamed(s)) for s in top_sentences))
    # Named in a partial answer or refusal: uncovered rare words that carry the question (not an
    # aside such as "explain" or "works"), the widest gap first. Relative to the question's
    # heaviest word, since every word of a long question carries less.
    heaviest = max(carried.values(), default=0.0)
    uncovered = sorted((w for w, c in rare.items()
                        if c < synonym_similarity and carried[w] >= name_share * heaviest),
                       key=lambda w: -gaps[w])
    said = {w.lower() for w in literals}  # "DataFrames" is named once, as the question has it
    missing = tuple(literals) + tuple(w for w in uncovered[:MISSING_NAMED] if w not in said)
    elsewhere = tuple(w for w in uncovered[:MISSING_NAMED] if grounding.matches(stem(w), corpus)
                      or any(t in corpus for t in aliases.get(stem(w), ())))
    return Signals(dense=float(dense), sentence=float(sentence), title=float(title),
                   term_min=min(rare.values(), default=1.0),
                   term_gap=max(gaps.values(), default=0.0), literals=float(len(literals)),
                   quantity=quantity, missing=missing, elsewhere=elsewhere)


@dataclass(frozen=True)
class Scorer:
    """Logistic regression over Signals. The cut-offs `full` and `partial` are settings
    (answer_full, answer_partial), chosen on tuning data; the weights are data, in WEIGHTS_FILE."""
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]  # feature standardisation, fitted with the weights
    scale: tuple[float, ...]
    full: float  # P(answerable) at or above this: a full answer
    partial: float  # at or above this (below `full`): a partial answer; below: refuse

    @classmethod
    def load(cls, full: float, partial: float, path: Path = WEIGHTS_FILE) -> "Scorer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path} was fitted on features {data['features']}, not {FEATURES}; "
                             "refit with `python -m bench.answerability --fit`")
        return cls(tuple(data["weights"]), data["bias"], tuple(data["mean"]), tuple(data["scale"]),
                   full, partial)

    def probability(self, s: Signals) -> float:
        z = (s.vector() - np.array(self.mean)) / np.array(self.scale)
        return float(1.0 / (1.0 + np.exp(-(z @ np.array(self.weights) + self.bias))))

    def decide(self, p: float) -> Coverage:
        if p >= self.full:
            return Coverage.FULL
        return Coverage.PARTIAL if p >= self.partial else Coverage.NONE
