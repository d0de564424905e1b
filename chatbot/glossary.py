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

import tomllib
from pathlib import Path
from typing import Mapping

from chatbot.config import SettingsError
from chatbot.text import stem

GLOSSARY_FILE = "glossary.toml"  # in the corpus folder


def load(corpus_dir: Path) -> Mapping[str, frozenset[str]]:
    """The stem of each everyday word -> the stems of the corpus terms it stands for; empty
    without a glossary. A malformed one is a SettingsError that names the file and the fix."""
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
        if not isinstance(everyday, list) or not all(
                isinstance(w, str) and w.strip() and " " not in w.strip() for w in everyday):
            raise SettingsError(f"{path}: {term!r} must list single words; {fix}")
        for word in everyday:
            aliases.setdefault(stem(word.strip()), set()).add(stem(term))
    return {w: frozenset(terms) for w, terms in aliases.items()}
