"""Word-level text helpers shared by lexical retrieval and the grounding checks."""
from __future__ import annotations

import re
from functools import lru_cache

import snowballstemmer
from wordfreq import zipf_frequency

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
may me might more most must my myself now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves get got let lets one ones thing things
please tell know want like really kind sort way well much many still even ever us i'm it's
""".split())
NEGATIONS = frozenset({"not", "no", "never", "none", "cannot", "nothing", "without"})
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)?%?")
_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    return _stemmer.stemWord(word.lower().strip("'-"))


@lru_cache(maxsize=1 << 16)
def english_zipf(word: str) -> float:
    """How common `word` is in English (Zipf, wordfreq's whole English list), remembered: the
    support check, the answerability signals, the language check, the instruction screen and
    the reading of contractions all ask for the same words."""
    return zipf_frequency(word, "en")


def words(text: str) -> list[str]:
    return [_with_apostrophe(w.lower()) for w in _WORD.findall(text.replace("’", "'"))]


# A contraction typed without its apostrophe ("doesnt", "hes", "whats": patients on phones) is
# read as the contraction when that is this much more common in English (Zipf) than the word as
# typed: "doesnt" 4.1 -> "doesn't" 5.5, "hes" 4.0 -> "he's" 5.6; "ill" 4.7 -> "i'll" 5.4 and
# "id" 4.6 -> "i'd" 5.4 stay as typed, as do "its", "well", "were", "shed" and "wed". Read as
# typed, they were the question's rarest words: uncovered topics (issue #9's FAQ fresh set).
CONTRACTION_MARGIN = 1.0
_CONTRACTIONS = {"nt": "n't", "s": "'s", "re": "'re", "ve": "'ve", "ll": "'ll", "m": "'m",
                 "d": "'d"}  # as typed -> as written


@lru_cache(maxsize=100_000)
def _with_apostrophe(word: str) -> str:
    if "'" in word:
        return word
    for typed, written in _CONTRACTIONS.items():
        if word.endswith(typed) and len(word) > len(typed):
            restored = word[:-len(typed)] + written
            if english_zipf(restored) >= english_zipf(word) + CONTRACTION_MARGIN:
                return restored
    return word


def is_negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith("n't")


def content_words(text: str) -> list[str]:
    """Words that carry meaning: no stopwords nor their contractions ("what's", "he's"), no
    negations (those are checked separately)."""
    return [w for w in words(text)
            if w.split("'")[0] not in STOPWORDS and not is_negation(w)
            and (len(w) > 1 or w.isdigit())]


def terms(text: str) -> list[str]:
    """Stemmed content words: the tokens of lexical search."""
    return [stem(w) for w in content_words(text)]


_CAMEL_NAME = re.compile(r"\b[A-Za-z]*[a-z][A-Z]\w*")  # ShutDown, TypeAliasType, PyTorch


def camel_names(text: str) -> set[str]:
    """Words with a capital after a small letter: names in code or of products ("ShutDown",
    "TypeAliasType", "PyTorch"), whose case is part of the name ("shutdown" is another)."""
    return set(_CAMEL_NAME.findall(text))
