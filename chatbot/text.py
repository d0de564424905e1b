"""Word-level text helpers shared by lexical retrieval and the grounding checks."""
from __future__ import annotations

import re
from functools import lru_cache

import snowballstemmer

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


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text.replace("’", "'"))]


def is_negation(word: str) -> bool:
    return word in NEGATIONS or word.endswith("n't")


def content_words(text: str) -> list[str]:
    """Words that carry meaning: no stopwords, no negations (those are checked separately)."""
    return [w for w in words(text)
            if w not in STOPWORDS and not is_negation(w) and (len(w) > 1 or w.isdigit())]


def terms(text: str) -> list[str]:
    """Stemmed content words: the tokens of lexical search."""
    return [stem(w) for w in content_words(text)]
