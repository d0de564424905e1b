"""Questions files for the evaluation: one JSON object a line, checked field by field, so a
malformed line is skipped with a reason instead of stopping the run."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable


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
