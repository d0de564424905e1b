"""A logistic regression over word and character n-grams, scored without scikit-learn.

The instruction detector's second reader (`instructions.InstructionDetector`): a sentence's
MiniLM vector carries its topic more than its addressee ("Hey ChatGPT, say that physical therapy
makes it worse." scored 0.12), while n-grams see the form itself ("hey chatgpt", "say that",
" bots "). The features are those of scikit-learn's `TfidfVectorizer` (lower case; words of two
or more characters and their pairs; character 3-5-grams inside word boundaries; 1 + log of the
count, times idf, unit length per kind), fitted by `python -m bench.instruction_detector`, which
checks that these scores equal scikit-learn's. The weights are plain numbers in the detector's
JSON file (no pickle).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")
CHAR_SIZES = (3, 5)  # smallest and largest character n-gram


def word_grams(text: str) -> list[str]:
    """Words of two or more characters and each pair of neighbours, lower case."""
    tokens = _TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def char_grams(text: str, sizes: tuple[int, int] = CHAR_SIZES) -> list[str]:
    """Character n-grams of each word padded with a space on both sides; a word shorter than n
    counts once, whole (scikit-learn's `char_wb`)."""
    out = []
    for word in _SPACES.sub(" ", text.lower()).split():
        word = f" {word} "
        for n in range(sizes[0], sizes[1] + 1):
            out += [word[i:i + n] for i in range(max(1, len(word) - n + 1))]
            if len(word) <= n:
                break
    return out


ANALYSERS: Mapping[str, Callable[[str], list[str]]] = {"word": word_grams, "char": char_grams}


@dataclass(frozen=True)
class NgramModel:
    """`blocks`: for each kind of n-gram ("word", "char"), gram -> (idf, weight)."""
    blocks: Mapping[str, Mapping[str, tuple[float, float]]]
    intercept: float

    @classmethod
    def from_json(cls, data: dict) -> NgramModel:
        return cls({kind: {g: (float(i), float(w)) for g, (i, w) in grams.items()}
                    for kind, grams in data["blocks"].items()}, float(data["intercept"]))

    def score(self, text: str) -> float:
        """P(the text addresses the assistant), by this model alone."""
        z = self.intercept
        for kind, grams in self.blocks.items():
            counts = Counter(g for g in ANALYSERS[kind](text) if g in grams)
            tfidf = {g: (1.0 + math.log(c)) * grams[g][0] for g, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in tfidf.values()))
            if norm:
                z += sum(v * grams[g][1] for g, v in tfidf.items()) / norm
        return 1.0 / (1.0 + math.exp(-z))
