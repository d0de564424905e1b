"""question (+ history) -> retrieval -> evidence -> draft -> grounding -> Answer.

The program, not the model, decides what may be said: it refuses when retrieval is weak, when
no passage sentence answers the question, or when the question asks about something the
passages never mention; it checks every sentence of the model's draft against the passage it
cites, drops what is unsupported, and falls back to the passages' own words when nothing is left.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from chatbot import grounding, index as index_mod, models
from chatbot.chunking import Chunk
from chatbot.config import Settings
from chatbot.generation import Generator, make_generator
from chatbot.retrieval import Hit, Retriever
from chatbot.text import content_words, words

REFUSAL = "The documents I have do not cover this."
_ANAPHORA = frozenset("it its that this they them their those these there he she him her".split())
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules?|prompts?|documents?"
    r"|context|guidelines|above|previous|everything)\b|\bsystem prompt\b|\bjailbreak|\byou are now\b"
    r"|\bpretend (to be|you)\b|\bact as\b", re.I)


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


@dataclass
class Answer:
    question: str
    query: str  # the standalone query used for retrieval (differs for follow-ups)
    text: str
    refused: bool
    citations: list[Citation] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)  # dropped ones too, for the UI to flag
    note: str = ""  # why it refused, or why the passages' own words were used
    sources: list[str] = field(default_factory=list)  # every document searched
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The `ask --json` shape."""
        return {
            "question": self.question, "query": self.query, "answer": self.text,
            "refused": self.refused, "note": self.note,
            "citations": [{"n": c.n, "source": c.chunk.source, "title": c.chunk.title,
                           "start": c.chunk.start, "end": c.chunk.end, "text": c.chunk.text,
                           "spans": [list(sp) for sp in c.spans],
                           "quotes": [c.chunk.text[a - c.chunk.start:b - c.chunk.start] for a, b in c.spans]}
                          for c in self.citations],
            "retrieved": [{"source": h.chunk.source, "title": h.chunk.title,
                           "score": round(h.score, 4), "text": h.chunk.text} for h in self.hits],
            "claims": [{"text": c.text, "supported": c.supported, "citations": list(c.citations),
                        "reason": c.reason} for c in self.claims],
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class _Sentence:
    hit: int  # position in the hit list
    span: tuple[int, int]  # offsets into the source document
    text: str
    vec: np.ndarray


@dataclass(frozen=True)
class _ClaimDraft:
    text: str
    supported: bool
    hit: int
    span: tuple[int, int]
    reason: str


def _best(hits: list[Hit]) -> float:
    return max((h.dense for h in hits), default=-1.0)


def standalone_query(question: str, history: Sequence[str]) -> str:
    """A follow-up that leans on the last question ("how is it treated?") carries it along."""
    if not history:
        return question
    if any(w in _ANAPHORA for w in words(question)) or len(content_words(question)) <= 1:
        return f"{question} ({history[-1]})"
    return question


def common_stems(index: index_mod.Index, settings: Settings) -> frozenset[str]:
    """Word stems the corpus uses in many of its documents; none in a corpus of few files."""
    n = len(index.sources)
    if n < settings.common_word_min_docs:
        return frozenset()
    many = max(settings.common_word_min_docs, settings.common_word_share * n)
    return frozenset(w for w, df in index.document_frequency.items() if df >= many)


class Chatbot:
    def __init__(self, settings: Settings, index: index_mod.Index | None = None,
                 generator: Generator | None = None):
        self.settings = settings
        self.index = index or index_mod.ensure(settings)
        models.embedder()  # load now, not on the first question (a fresh index needs no embedding)
        self.generator = generator or make_generator(settings)
        self.retriever = Retriever.from_settings(self.index, settings)
        self.common = common_stems(self.index, settings)

    def reindex(self) -> index_mod.Index:
        """Bring the index up to date with the corpus folder (after an upload, say) without a restart.
        Questions already running keep the index they started with."""
        fresh = index_mod.ensure(self.settings)
        self.index, self.retriever = fresh, Retriever.from_settings(fresh, self.settings)
        self.common = common_stems(fresh, self.settings)
        return fresh

    def answer(self, question: str, history: Sequence[str] = ()) -> Answer:
        *_, final = self.stream(question, history)
        return final

    def stream(self, question: str, history: Sequence[str] = ()) -> Iterator[str | Answer]:
        """Draft text pieces as the model writes them, then the checked Answer last."""
        s, t0 = self.settings, time.perf_counter()
        ms = lambda: (time.perf_counter() - t0) * 1000  # noqa: E731
        query = standalone_query(question.strip(), history)
        base = dict(question=question, query=query, sources=self.index.sources)
        if not question.strip():
            yield Answer(text="Please ask a question.", refused=True, note="empty question", **base)
            return
        if _INJECTION.search(question):
            yield self._refuse(base, [], "it asks me to change my rules; I only answer from the "
                               "documents", ms)
            return
        retriever = self.retriever  # one index for the whole question, even if reindex() runs
        qvec = models.embed([query])
        hits = retriever.search(query, s.top_k, qvec)
        if history and query == question.strip() and _best(hits) < s.min_score + s.follow_up_margin:
            # Alone, the question finds little ("what is the device called?"): read it in the
            # light of the previous one, and keep whichever reading finds the closer passage.
            alt_query = f"{query} ({history[-1]})"
            alt_vec = models.embed([alt_query])
            alt_hits = retriever.search(alt_query, s.top_k, alt_vec)
            if _best(alt_hits) > _best(hits):
                query, hits, qvec = alt_query, alt_hits, alt_vec
                base["query"] = query
        timings = {"retrieve_ms": ms()}
        if _best(hits) < s.min_score:
            yield self._refuse(base, hits, "no passage is close to the question", ms, timings)
            return
        sentences = self._sentences(hits)
        evidence, strength = self._select(qvec[0], sentences)
        # The new question's own words: the earlier one carried along was checked in its turn.
        closest = " ".join(h.chunk.text for h in hits[:3])
        missing = grounding.missing_literals(question, closest)
        if strength < s.strong_match:  # a close paraphrase may use other words, but not other numbers
            missing += grounding.uncovered_terms(question, closest, s.question_zipf, models.embed,
                                                 s.synonym_similarity, common=self.common)
        if missing:
            yield self._refuse(base, hits, "they do not mention " + ", ".join(missing), ms, timings)
            return
        if not evidence:  # the closest passages hold no statement (headings, fragments)
            yield self._refuse(base, hits, "no sentence in the closest passages answers it", ms, timings)
            return
        used = sorted({e.hit for e in evidence})
        timings["select_ms"] = ms()
        facts = [(n, " ".join(e.text for e in evidence if e.hit == h)) for n, h in enumerate(used, 1)]
        draft = []
        for piece in self.generator.stream(query, facts):
            timings.setdefault("first_token_ms", ms())
            draft.append(piece)
            yield piece
        timings["generate_ms"] = ms()
        claims, note = self._ground("".join(draft), used, sentences, evidence)
        timings["total_ms"] = ms()
        yield self._compose(base, hits, claims, note, timings)

    # -- steps ---------------------------------------------------------------------------------

    def _sentences(self, hits: list[Hit]) -> list[_Sentence]:
        spans = [(i, sp) for i, h in enumerate(hits) for sp in grounding.statements(h.chunk.text, h.chunk.start, h.chunk.flagged)]
        texts = [hits[i].chunk.text[a - hits[i].chunk.start:b - hits[i].chunk.start] for i, (a, b) in spans]
        vecs = models.embed(texts) if texts else np.zeros((0, 1), "float32")
        return [_Sentence(i, sp, t, v) for (i, sp), t, v in zip(spans, texts, vecs)]

    def _select(self, qvec: np.ndarray, sentences: list[_Sentence]) -> tuple[list[_Sentence], float]:
        """The sentences that best answer the question, in document order, and how well the best
        one matches. The top passage is trusted even when no single sentence matches well (a FAQ
        answer often shares no words with its question); a lower passage adds its best sentence
        only when that sentence matches about as well as the top passage's best."""
        s = self.settings
        scored = sorted(((float(x.vec @ qvec), x) for x in sentences), key=lambda p: -p[0])
        top = [(sc, x) for sc, x in scored if x.hit == 0]
        if not top:
            return [], 0.0
        best = top[0][0]
        keep = [x for sc, x in top if sc >= best - s.evidence_margin][: s.max_evidence_sentences]
        for h in sorted({x.hit for _, x in scored} - {0}):
            sc, x = next(p for p in scored if p[1].hit == h)
            if sc >= max(s.second_passage_score, best - s.evidence_margin):
                keep.append(x)
        return sorted(keep, key=lambda x: (x.hit, x.span)), best

    def _ground(self, draft: str, used: list[int], sentences: list[_Sentence],
                evidence: list[_Sentence]) -> tuple[list[Claim], str]:
        """Check each draft sentence against the passages it may cite; keep what is supported."""
        s = self.settings
        passages = {h: [x for x in sentences if x.hit == h] for h in used}
        pieces = [grounding.split_citations(t) for t in grounding.answer_sentences(draft)]
        pieces = [(text, cited) for text, cited in pieces if text]
        vecs = models.embed([t for t, _ in pieces]) if pieces else []
        claims = []
        for (text, cited), vec in zip(pieces, vecs):
            verdicts = {h: grounding.support(text, vec, [x.text for x in ps], np.stack([x.vec for x in ps]),
                                             s.support_threshold, s.claim_zipf)
                        for h, ps in passages.items()}
            # Prefer a passage the model cited (fact numbers are 1-based positions in `used`).
            cited_hits = [used[n - 1] for n in cited if 1 <= n <= len(used)]
            ranked = sorted(verdicts, key=lambda h: (not verdicts[h].supported, h not in cited_hits,
                                                     -verdicts[h].score))
            h = ranked[0]
            v = verdicts[h]
            span = passages[h][v.sentence].span
            claims.append(_ClaimDraft(text, v.supported, h, span, v.reason))
        if any(c.supported for c in claims):
            return claims, ""
        fallback = [_ClaimDraft(e.text, True, e.hit, e.span, "") for e in evidence]
        note = "the model's wording was not supported by the passages, so this answer quotes them"
        return [*claims, *fallback] if claims else fallback, note

    def _compose(self, base: dict, hits: list[Hit], drafts: list[_ClaimDraft], note: str,
                 timings: dict) -> Answer:
        """Number cited passages by first use; one [n] per passage, highlighting every span used."""
        spans: dict[int, list[tuple[int, int]]] = {}
        claims, parts = [], []
        for d in drafts:
            if not d.supported:
                claims.append(Claim(d.text, False, (), d.reason))
                continue
            spans.setdefault(d.hit, [])
            if d.span not in spans[d.hit]:
                spans[d.hit].append(d.span)
            n = list(spans).index(d.hit) + 1
            claims.append(Claim(d.text, True, (n,)))
            parts.append(f"{d.text.rstrip()} [{n}]")
        citations = [Citation(n, hits[h].chunk, tuple(sorted(spans[h]))) for n, h in enumerate(spans, 1)]
        return Answer(text=" ".join(parts), refused=False, citations=citations, hits=hits,
                      claims=claims, note=note, timings=timings, **base)

    def _refuse(self, base: dict, hits: list[Hit], why: str, ms, timings: dict | None = None) -> Answer:
        searched = ", ".join(base["sources"][:5]) + (" ..." if len(base["sources"]) > 5 else "")
        closest = "; ".join(dict.fromkeys(f"“{h.chunk.title}” ({h.chunk.source})" for h in hits[:3]))
        text = f"{REFUSAL} ({why}.) I searched: {searched}."
        if closest:
            text += f" Closest passages: {closest}."
        return Answer(text=text, refused=True, hits=hits, note=why,
                      timings={**(timings or {}), "total_ms": ms()}, **base)
