"""A corpus's glossary: its own terms and the everyday words its readers use for them.

Patients write "the metalwork" where a spine FAQ says "hardware", "my op" where it says
"surgery"; no packaged model links those reliably (README, *Lay words*). Whoever keeps the
corpus can: `glossary.toml` beside the documents (no loader reads it as a document) says

    [synonyms]
    hardware = ["metalwork", "metal", "rods"]
    surgery = ["op", "operation"]

It widens one thing only: a question's word counts as covered by passages that hold the term
it stands for (answerability's term coverage), so "is it bad to leave all that metal in me?" is
no longer "The documents do not mention metal" beside a passage on the instrumentation. It is
never a reason to retrieve, quote or let a draft sentence pass the support check: an answer is
still the passages' own words, or a draft each of whose sentences they support.
"""
from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import AbstractSet, Mapping

from chatbot.config import SettingsError
from chatbot.text import stem

log = logging.getLogger(__name__)

GLOSSARY_FILE = "glossary.toml"  # in the corpus folder


def _one_word(w: object) -> bool:
    return isinstance(w, str) and bool(w.strip()) and len(w.split()) == 1


def load(corpus_dir: Path, vocabulary: AbstractSet[str] | None = None
         ) -> Mapping[str, frozenset[str]]:
    """The stem of each everyday word -> the stems of the corpus terms it stands for; empty
    without a glossary. Words match by stem ("rods" lists "rod" too). A malformed glossary is a
    SettingsError that names the file and the fix; with the corpus's `vocabulary` (word stems),
    a term no document uses is logged, since its words can never count (a misspelt term)."""
    path = Path(corpus_dir) / GLOSSARY_FILE
    if not path.is_file():
        return {}
    fix = ('write it as [synonyms] then lines such as hardware = ["metalwork", "metal"]')
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("synonyms")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path} is not valid TOML ({exc}); {fix}") from None
    if not isinstance(table, dict):
        raise SettingsError(f"{path} has no [synonyms] table; {fix}")
    aliases: dict[str, set[str]] = {}
    for term, everyday in table.items():
        if not _one_word(term):
            raise SettingsError(f"{path}: the term {term!r} must be one word of the documents; "
                                f"{fix}")
        if not isinstance(everyday, list) or not all(_one_word(w) for w in everyday):
            raise SettingsError(f"{path}: {term!r} must be a list of single words; {fix}")
        for word in everyday:
            aliases.setdefault(stem(word.strip()), set()).add(stem(term))
    unused = [t for t in table if vocabulary is not None and stem(t) not in vocabulary]
    if unused:
        log.warning("%s: no document uses %s, so the words listed for %s never count; check "
                    "the spelling", path, ", ".join(unused), "it" if len(unused) == 1 else "them")
    return {w: frozenset(terms) for w, terms in aliases.items()}
