"""What the pipeline hands back: typed outcomes other code reads, never parses.

An `Answer` says how well the documents cover the question (`coverage`), why it came out that
way (`outcome.code`, a fixed vocabulary, plus a human `detail`), whose words are served
(`wording`), and the citations that map each sentence to a file and passage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from chatbot.answerability import Coverage
from chatbot.chunking import Chunk
from chatbot.retrieval import Hit

REFUSAL = "The documents I have do not cover this."


class Code(str, Enum):
    """Why an answer came out the way it did."""
    ANSWERED = "answered"  # full coverage: checked, cited sentences
    PARTIAL = "partial_coverage"  # the nearest topic is quoted; what is missing is named
    NOT_COVERED = "not_covered"  # the scorer found no answer in the closest passages
    NO_CLOSE_PASSAGE = "no_close_passage"  # retrieval found nothing near the question
    NO_STATEMENT = "no_statement"  # the closest passages hold no quotable sentence
    CHANGE_RULES = "asks_to_change_rules"  # reads as an instruction, and nothing covers it
    EMPTY = "empty_question"
    TOO_LONG = "question_too_long"  # over max_question_chars: refused before it is read
    STOPPED = "stopped"  # the user stopped it: the sentences checked until then, no more


@dataclass(frozen=True)
class Outcome:
    code: Code
    detail: str = ""  # for people: why it refused, what is missing, why quotes were used


@dataclass(frozen=True)
class Citation:
    n: int
    chunk: Chunk
    spans: tuple[tuple[int, int], ...]  # the supporting sentences, as offsets into the source


@dataclass(frozen=True)
class Claim:
    """One answer sentence and the verdict of the support check."""
    text: str
    supported: bool
    citations: tuple[int, ...] = ()
    reason: str = ""
    quoted: bool = False  # a passage's own sentence, not the model's wording


@dataclass
class Answer:
    question: str
    query: str  # the standalone query used for retrieval (differs for follow-ups)
    text: str  # what the user reads: `preamble`, the cited sentences, `advice`
    coverage: Coverage
    outcome: Outcome
    citations: list[Citation] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)  # dropped ones too, for the UI to flag
    preamble: str = ""  # uncited framing of a partial answer ("The documents do not mention ...")
    advice: str = ""  # uncited closing advice of a partial answer (the corpus's refusal_advice)
    wording: str = ""  # "model" (its checked draft), "quotes" (the passages' own words), "" refused
    sources: list[str] = field(default_factory=list)  # every document searched
    signals: dict = field(default_factory=dict)  # what the answerability scorer read, and its P
    # Sentences of the retrieved passages that read as instructions to the assistant (never
    # quoted): source -> spans in source offsets (instructions.flag_passages)
    flagged: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.coverage is Coverage.NONE

    @property
    def note(self) -> str:
        return self.outcome.detail

    def to_dict(self) -> dict:
        """The `ask --json` shape."""
        return {
            "question": self.question, "query": self.query, "answer": self.text,
            "coverage": self.coverage.value, "refused": self.refused,
            "code": self.outcome.code.value, "note": self.outcome.detail,
            "preamble": self.preamble, "advice": self.advice, "wording": self.wording,
            "citations": [{"n": c.n, "source": c.chunk.source, "title": c.chunk.title,
                           "start": c.chunk.start, "end": c.chunk.end, "text": c.chunk.text,
                           "spans": [list(sp) for sp in c.spans],
                           "quotes": [c.chunk.text[a - c.chunk.start:b - c.chunk.start]
                                      for a, b in c.spans]}
                          for c in self.citations],
            "retrieved": [{"source": h.chunk.source, "title": h.chunk.title,
                           "score": round(h.score, 4), "text": h.chunk.text} for h in self.hits],
            "claims": [{"text": c.text, "supported": c.supported, "citations": list(c.citations),
                        "reason": c.reason, "quoted": c.quoted} for c in self.claims],
            "answerability": self.signals,
            "flagged": {source: [list(sp) for sp in spans]
                        for source, spans in self.flagged.items()},
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
        }
