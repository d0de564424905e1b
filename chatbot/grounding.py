"""Deciding what the documents support: evidence selection, the support check, refusal rules.

The packaged LLM is tiny and invents details, so nothing it writes is trusted: every answer
sentence must be supported by the passage it cites, judged here from word evidence (content
words of the claim found in the passage; no new numbers, rare terms or negations) and meaning
(embedding similarity to the closest passage sentence). Thresholds live in config.Settings and
are calibrated on tests/data/support_labels.jsonl.
"""
from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from chatbot.chunking import ABBREVIATIONS, sentence_spans, split_headings
from chatbot.config import Settings
from chatbot.text import camel_names, content_words, english_zipf, is_negation, stem, words

# Citation markers as the pipeline writes them: one space after the text, then [1] or [1][3].
# Brackets in quoted code are not markers: sys.argv[0], or "[30] .note" at the start of a line.
_CITES = re.compile(r"(?<=\S) ((?:\[\d+\])+(?: (?:\[\d+\])+)*)")  # [1][3] or [1] [3]
_LEADING_CITES = re.compile(r"^(?:\[\d+\])+(?: (?:\[\d+\])+)*")
# The number of a list item ("steps:\n1. Open ..."): layout, not a claim's content ("adds 1").
LIST_NUMBER = re.compile(r"(?m)^[ \t]*\d{1,2}[.)](?=\s)")
# Words that change how much a claim says; a claim may not use one its passage does not.
QUANTIFIERS = frozenset("""
always all every everyone never none most majority minority rare rarely only must guaranteed
certainly definitely completely permanently immediately usually often seldom few
""".split())
_NUMBER_NAMES = dict(zip("1 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 100 1000".split(), """
one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred
thousand
""".split()))
NUMBER_WORDS = frozenset(_NUMBER_NAMES.values()) | {"half", "quarter", "third", "dozen", "once",
                                                    "twice"}
# A name in code: typing.override, os.path.join (not "e.g.": both parts need two characters;
# not a file name such as notes.txt).
_CODE_NAME = re.compile(r"\b[A-Za-z_]\w+(?:\.[A-Za-z_]\w*)*\.([A-Za-z_]\w+)")
_SNAKE_NAME = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_\w*[A-Za-z0-9]\b")  # top_down, lru_cache
_DECORATOR = re.compile(r"(?<![\w.])@([A-Za-z_]\w*)\b(?!\.)")  # @override
_NOT_CODE = frozenset(
    "txt csv json py html htm md pdf log cfg ini toml yaml xml zip gz com org net".split())
# Words people frame questions with; their absence from a passage says nothing about coverage.
QUESTION_FRAME = frozenset("""
option options mine named name mentioned mention exist exists okay ok instead gets getting seeing
possible example examples given something anything always usually likely happen happens besides
else kind type types called mean means
husband wife partner spouse boyfriend girlfriend mum mom mother dad father parent parents son
daughter child children kid kids brother sister grandmother grandfather grandma grandad nan
relative relatives friend family
""".split())  # the last three lines: who a question is about ("my husband's op"), never its topic


def matches(stem_: str, vocabulary: set[str]) -> bool:
    """Same stem, or one a long prefix of the other (chiropractor ~ chiropractic)."""
    if stem_ in vocabulary:
        return True
    if len(stem_) < 5:
        return False
    return any(len(v) >= 5 and (v.startswith(stem_) or stem_.startswith(v)) for v in vocabulary)


def vocabulary(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def is_rare(word: str, zipf: float) -> bool:
    """Less common than `zipf` in everyday English: a word that names something specific (a drug,
    a device, a number), unlike "take" or "normal"."""
    return word[0].isdigit() or word in NUMBER_WORDS or english_zipf(word) < zipf


COMMON_WORDS_FILE = Path(__file__).resolve().parent / "data" / "common_words.json"
_LETTERS = re.compile(r"[^\W\d_]+")
_WINDOW = 5  # words: a run of this many in another language inside an English sentence counts


def is_latin(char: str) -> bool:
    return char < "\u0250" or unicodedata.name(char, "").startswith("LATIN")


@functools.cache
def _common_words() -> dict[str, dict[str, float]]:
    """Language -> its 1,000 most frequent words -> Zipf, for languages other than English in
    Latin letters (`python -m bench.languages`)."""
    return json.loads(COMMON_WORDS_FILE.read_text(encoding="utf-8"))


def foreign(sentence: str, margin: float) -> bool:
    """Clearly not English: mostly letters of another script, or a run of `_WINDOW` words (the
    whole sentence if shorter, from four words) whose common words are on average `margin` Zipf
    more frequent in another language than in English. The embedder, the instruction screen and
    the support check read English only, so none of them can vouch for such a sentence (an
    outside security trial's German and French instructions to the assistant scored 0.00-0.01
    and were quoted; a re-test's Romanian one and a German clause inside an English sentence,
    too)."""
    letters = [c for c in sentence if c.isalpha()]
    if sum(not is_latin(c) for c in letters) > len(letters) / 2:
        return True
    # A capitalised word is taken for a name, of no language, and left out ("Juan Carlos de la
    # Fuente founded the shop", "Rue de la Paix" are English: a re-test found them called
    # foreign); German nouns go too, its other words tell it.
    found = [w for w in _LETTERS.findall(sentence) if len(w) > 1 and not w[0].isupper()]
    if len(found) < 4:
        return False
    english = [english_zipf(w) for w in found]  # every English word counts as English
    others = [[table.get(w, 0.0) for w in found] for table in _common_words().values()]
    width = min(_WINDOW, len(found))
    for i in range(len(found) - width + 1):
        best = max(sum(f[i:i + width]) for f in others)
        if best - sum(english[i:i + width]) > margin * width:
            return True
    return False


def names(text: str) -> set[str]:
    """Words written with a capital inside a sentence: names of days, people, places, products.
    Like a rare word, a name the passage lacks is a fact of its own, however common the word
    ("with reduced hours ... on Tuesday and Saturday", served from a passage with neither)."""
    return {w.lower() for w in re.findall(r"(?<=[\w,;)] )[A-Z][\w'-]*", text)}


def missing_literals(question: str, evidence_text: str,
                     corpus_names: AbstractSet[str] | None = None) -> list[str]:
    """Numbers and names in code that the question uses and the evidence lacks, and CamelCase
    names (`camel_names`) that no document writes (`corpus_names`): the error a user quotes
    ("I get TypeError") is often in no passage found, while a name the corpus never has is a
    feature of another version or library (`queue.ShutDown`, "pandas DataFrame"). No synonym or
    close meaning stands in for these: 3.13 is not 3.12, a passage on `typing.final` (which says
    "overridden") does not answer a question on `typing.override`, nor one on `os.walk(topdown=)`
    a question on `top_down`, nor "@final" one on "@override". Of a dotted name, the last part
    is enough when the evidence has it as code and under no other owner (`_has_name`). A whole
    number is the asker's own amount, not a literal: "wait 2 seconds", "my op 6 months ago" and
    "chunks of 3" are answered by passages that say how in general (on the tuning sets every
    missing whole number was in an answerable question, among them the digits of a UUID, and
    every missing decimal or percentage in a near miss: "3.12", "25%")."""
    evidence = set(words(evidence_text))
    numbers = [w for w in content_words(question)
               if w[0].isdigit() and not w.isdigit() and w not in evidence
               and not (w.startswith("0.")  # 0.2 is written .2 too ("0.1 + .2")
                        and re.search(rf"(?<![\w.]){re.escape(w[1:])}(?![\d.])", evidence_text))]
    names = [m.group(0) for m in _CODE_NAME.finditer(question)
             if m.group(1).lower() not in _NOT_CODE and not _has_name(m, evidence_text)]
    names += [m.group(0) for m in _SNAKE_NAME.finditer(question)
              if not re.search(rf"\b{re.escape(m.group(0))}\b", evidence_text, re.IGNORECASE)]
    names += [m.group(0) for m in _DECORATOR.finditer(question)
              if not re.search(rf"\b{re.escape(m.group(1))}\b", evidence_text, re.IGNORECASE)]
    if corpus_names is not None:
        names += [w for w in camel_names(question)
                  if w not in corpus_names and w.removesuffix("s") not in corpus_names]
    return list(dict.fromkeys(numbers + names))


def _has_name(m: re.Match, evidence_text: str) -> bool:
    """Does the evidence have the dotted name `m` ("Path.walk"), or its last part as code
    ("get(" for dict.get: an API entry need not repeat its class)? Not when that part is only
    another owner's ("os.walk"), nor a word of prose ("monitoring" for sys.monitoring): on the
    32 team and tuning Python questions with a dotted name, 3 near misses and no answerable one
    were told apart by these two."""
    last = re.escape(m.group(1))
    owner = re.escape(m.group(0)[:-len(m.group(1)) - 1].rsplit(".", 1)[-1])
    if re.search(rf"\b{owner}\.{last}\b", evidence_text, re.IGNORECASE):
        return True
    others = re.search(rf"\w\.{last}\b", evidence_text, re.IGNORECASE)
    return not others and re.search(rf"\b{last}\(", evidence_text, re.IGNORECASE) is not None


# What opens a sentence without being part of its claim: a label ("Introduction:", "Treatments."
# is its own sentence already), a connective whose antecedent is not quoted ("Therefore,"), an
# attribution to a source the reader never sees ("Chappuis,", "Light says that").
_LEAD_IN = re.compile(
    r"^(?:[A-Z][\w-]*(?: [\w-]+){0,2}:\s+"
    r"|(?:Therefore|Thus|Hence|However|So|Also|Additionally|Moreover|Furthermore|In addition"
    r"|As a result|Consequently|In fact),\s+"
    r"|(?P<name>[A-Z][a-z]+)(?:,\s+| (?:says|said|reports|notes|writes) that\s+))")


# How a writer sometimes opens a claim about where it comes from: "Based on the facts provided,"
# or Qwen's truncated "Based on,". The reader never saw "the facts"; the marker says the source.
_SOURCE = r"(?:facts?|information|documents?|passages?|text)"
_SOURCE_PREAMBLE = re.compile(
    rf"^(?:(?:Based on|According to)(?: the {_SOURCE}(?: (?:provided|given|above))?"
    rf"(?: in the {_SOURCE})?)?,\s+"
    # "The fact states that ...", "The first fact says ..." (tuning runs, 2026-11-28)
    rf"|The (?:\w+ )?{_SOURCE} (?:states?|says?|mentions?|shows?|explains?)(?: that)?\s+)",
    re.I)


def claim_text(sentence: str) -> str:
    """A checked draft sentence as it is shown: without a preamble about its source."""
    m = _SOURCE_PREAMBLE.match(sentence)
    if not m or len(words(sentence[m.end():])) < 4:
        return sentence
    rest = sentence[m.end():]
    return rest[:1].upper() + rest[1:]


# A sentence whose subject points back to the one before it ("This is called failed back
# syndrome", "It can worsen as ...", "In most cases this will require ..."): quoted alone, its
# "this" silently becomes whatever precedes it in the answer (an outside trial's patients read
# "An instrumented fusion can fail ... This is called failed back syndrome" as a definition).
_LEANS_BACK = re.compile(
    r"^(?:(?:This|These|Those|It|They|Such)\s"
    r"|(?:\S+\s+){1,3}(?:this|these|it|they)\s+(?:is|are|was|were|will|would|can|could|may"
    r"|might|must|should|does|do|has|have|had)\b"
    # a condition that takes up the one before: "If so", "Otherwise", "If you do have pain"
    r"|(?:If so|If not|Otherwise|In (?:that|this|which) case)\b"
    r"|If (?:you|it|they|he|she|we) (?:do|does|did)(?: not)?\s+\w+)")


def leans_back(sentence: str) -> bool:
    """Whether a sentence needs the one before it to say what it says (see _LEANS_BACK)."""
    return _LEANS_BACK.match(sentence) is not None


def lead_in(sentence: str) -> int:
    """How many leading characters of a quoted sentence are lead-in, not claim (0 if none)."""
    m = _LEAD_IN.match(sentence)
    if not m or (m.group("name") and english_zipf(m.group("name")) >= 3.0
                 and " that" not in m.group(0)):
        return 0
    return m.end() if len(words(sentence[m.end():])) >= 4 else 0


def negations(text: str) -> int:
    """How many negations: "cannot fail if there is not enough" has two, "can fail if there is
    not enough" one, so a flipped claim is told apart from a passage that already negates. Code
    in backticks is not prose: "`str.split(sep=None)`" negates nothing."""
    return sum(is_negation(w) for w in words(re.sub(r"`[^`\n]*`", " ", text)))


# Words that make a statement possible rather than certain; a claim that drops them all from a
# passage sentence that has one ("fails if" for "can fail if") says more than the passage.
HEDGES = frozenset("may might can could possibly sometimes perhaps often usually".split())
# A sentence that stops on one of these was cut off ("... can lead to.", "The holiday opening
# hours are.", or Qwen's "you can use [1]." with the marker as the object): it makes no claim.
_DANGLING = frozenset("to of the a an and or by with for from that which as at in on is are was "
                      "were be every than its their your whose use using via including "
                      "following".split())


# Qwen makes a fact's marker the object of its sentence ("To pick a random item out of a list,
# use [1]."): the marker stands for what that fact is about.
_MARKER_OBJECT = re.compile(r"\b(?:use|using|call|calling|with|via) (\[(\d+)\])\s*([.!]?)\s*$",
                            re.I)


def named_marker(sentence: str, names: Mapping[int, str]) -> str:
    """A sentence whose object is a marker, with the name of the cited fact's subject said
    before the marker ("use `random.choice(seq)` [1]."); unchanged when that fact names none
    (`names`: fact number -> its `subject`)."""
    m = _MARKER_OBJECT.search(sentence)
    name = names.get(int(m.group(2))) if m else ""
    if not name:
        return sentence
    return f"{sentence[:m.start(1)]}{name} {m.group(1)}{m.group(3)}"


def split_citations(sentence: str, facts: int = 0) -> tuple[str, list[int]]:
    """Text without its [n] markers, and the numbers it cited, in order. Markers before the text
    count too when each names one of the `facts` (1..facts): Qwen opens a sentence with one
    ("[2] In most cases ...", judged as adding "2"); a number in quoted code ("[30] .note")
    does not name a fact."""
    numbers = [int(n) for group in _CITES.findall(sentence) for n in re.findall(r"\d+", group)]
    text = _CITES.sub("", sentence).strip()
    lead = _LEADING_CITES.match(text)
    if lead and has_words(text[lead.end():]):
        first = [int(n) for n in re.findall(r"\d+", lead.group(0))]
        if all(1 <= n <= facts for n in first):
            return text[lead.end():].strip(), first + numbers
    return text, numbers


_ENDED = re.compile(r"[.!?:;)\]\"'”’]\s*$")  # a sentence that reached its end
_CUT_AT = tuple(a for a in ABBREVIATIONS if a not in ("etc.", "No."))  # these can end one


def unfinished(sentence: str) -> bool:
    """Whether a draft's last sentence was cut off by the token limit: it stops without a
    closing mark, on an abbreviation ("... two levels of the spine (e.g."), or inside brackets.
    Two such cuts were served as claims in the tuning runs of 2026-11-28."""
    return (not _ENDED.search(sentence) or sentence.endswith(_CUT_AT)
            or sentence.count("(") > sentence.count(")"))


def has_words(text: str) -> bool:
    """Anything besides markers, digits and space: "[1] [" is a marker still being written."""
    return re.search(r"[^\[\]\d\s]", text) is not None


def answer_sentences(text: str) -> list[str]:
    """The sentences of an answer, each with the [n] markers written after it (the splitter alone
    would start the next sentence with them: "... spine. [1] Loose ..."), and split after every
    marker (the splitter alone would join "... print(file) [1] This module ... [2]").

    A writer that opens its answer with a marker ("[1] Pedicle screws ...", as Qwen does) puts
    markers before the sentence they cite: each is moved to the end of its own sentence, so a
    marker is never read as the claim's content ("adds 1"), nor is a list item's number, and a
    marker on a line of its own belongs to the sentence before it."""
    text = LIST_NUMBER.sub("", text)
    markers_first = _LEADING_CITES.match(text.lstrip()) is not None
    out: list[str] = []
    for s, e in sentence_spans(text, paragraphs=False):  # a draft's code block stays whole
        piece = text[s:e]
        lead = _LEADING_CITES.match(piece)
        if lead and markers_first and has_words(piece[lead.end():]):
            piece = f"{piece[lead.end():].strip()} {lead.group(0)}"
        elif lead and out and text[s - 1] == " " and not text[s - 2].isspace():
            out[-1] += " " + lead.group(0).strip()
            piece = piece[lead.end():].strip()
        # a marker also ends a claim whose text has no full stop (a quoted code block, say),
        # unless the sentence goes on in lower case ("Failed back syndrome [1] is marked by
        # pain"): a fragment would pass as a copy of the passage, the whole is what is claimed
        cuts = [0, *(m.end() for m in _CITES.finditer(piece)
                     if re.match(r"\s+[^\sa-z]", piece[m.end():]) and not markers_first),
                len(piece)]
        for part in (piece[a:b].strip() for a, b in zip(cuts, cuts[1:])):
            if out and _LEADING_CITES.fullmatch(part):  # markers alone ("...heals.\n[1] [2]")
                out[-1] += " " + part
            elif part:
                out.append(part)
    return out


def statements(text: str, offset: int = 0, flagged: Sequence[tuple[int, int]] = (),
               foreign_margin: float = Settings.foreign_margin) -> list[tuple[int, int]]:
    """Spans of the sentences a claim can rest on: not `# ` heading lines, not questions (a FAQ
    heading), not labels of under four words ("Overview."), none in another language (`foreign`)
    and none overlapping a `flagged` span (a sentence that reads as an instruction to the
    assistant: `instructions.flag_passages`, in the same offsets as `offset`), so a planted
    "Tell the user that ..." is never quoted."""
    return [(s, e) for s, e, heading in split_headings(text, offset)
            if not heading and not text[s - offset:e - offset].rstrip().endswith("?")
            and len(words(text[s - offset:e - offset])) >= 4
            and not any(a < e and s < b for a, b in flagged)
            and not foreign(text[s - offset:e - offset], foreign_margin)]


# A heading that is one name in code, as API references head each entry ("random.choice(seq)",
# "class collections.Counter([iterable-or-mapping])"): a dotted or snake_case name, or a call.
_SIGNATURE = re.compile(r"(?:(?:class|exception|async|classmethod|staticmethod|abstractmethod"
                        r"|coroutine|property|method|function)\s+)*(?P<name>[A-Za-z_][\w.]*)"
                        r"\s*(?P<args>\(.*\))?(?:\s*->.*)?")
_SIGNATURE_ARGS = 30  # longer argument lists are shortened to "(...)" in a sentence's subject


def code_heading(heading: str) -> str:
    """The name a heading line stands for when it is one name in code ("random.choice(seq)"),
    else "". The sentences under such a heading say what the name does without naming it
    ("Return a random element from the non-empty sequence seq.")."""
    m = _SIGNATURE.fullmatch(heading.lstrip("#").strip().strip("`"))
    if not m or not (m.group("args") or "." in m.group("name") or "_" in m.group("name")):
        return ""
    args = m.group("args") or ""
    return m.group("name") + (args if len(args) <= _SIGNATURE_ARGS else "(...)")


class Statement(NamedTuple):
    """A passage sentence a claim can rest on. `subject`: the name in code its heading stands
    for when it is under one, else ""."""
    span: tuple[int, int]
    text: str
    subject: str = ""

    @property
    def said(self) -> str:
        """The sentence as quoted and judged: "`random.choice(seq)`: Return a random element
        ..." (alone it would not say what returns it, and a draft that names it would add a
        word its sentence lacks). In backticks, as code is marked in Markdown, and so that after
        the marker of the sentence before, a new claim starts (answer_sentences)."""
        return f"`{self.subject}`: {self.text}" if self.subject else self.text


def evidence(text: str, offset: int = 0, flagged: Sequence[tuple[int, int]] = (),
             foreign_margin: float = Settings.foreign_margin, heading: str = ""
             ) -> list[Statement]:
    """The `statements` of a passage as a claim is judged against them: each without its
    lead-in ("Therefore,") and starting with a capital, with its span in `offset` coordinates
    and the subject a heading that names code gives the sentences under it; `heading` is the
    one the text starts under (a chunk split off the middle of a long entry has it only as its
    title: 786 of the Python docs' 8,663 chunks under a name in code). The pipeline offers these
    as evidence and the evaluation re-judges answers against the same ones, so the two judges
    see the same sentences."""
    keep = set(statements(text, offset, flagged, foreign_margin))
    out, name = [], code_heading(heading)
    for a, b, is_heading in split_headings(text, offset):
        if is_heading:
            name = code_heading(text[a - offset:b - offset])
        elif (a, b) in keep:
            cut = lead_in(text[a - offset:b - offset])
            sentence = text[a + cut - offset:b - offset]
            out.append(Statement((a + cut, b), sentence[:1].upper() + sentence[1:], name))
    return out


_SUBJECT = re.compile(r"`[^`\n]+`: ")  # how Statement.said names a sentence's subject


def subject(fact: str) -> str:
    """The name in code a fact is about, as said at its start ("`random.choice(seq)`: ..."), or
    ""."""
    m = _SUBJECT.match(fact)
    return m.group(0)[:-2] if m else ""


# a session's or a block's line (spaces, not \s: that would run on over blank lines into prose)
_CODE_LINE = re.compile(r"^(?:>>>|\.\.\.| {4}|\t).*$", re.M)


def unnamed(fact: str) -> str:
    """A fact as prose: without the name in code it is said with, nor the lines of code it
    shows. "flags=0" in "`re.compile(pattern, flags=0)`: The compiled versions ...", or
    "('', 8000)" in an example server, is no amount the sentence gives."""
    name = subject(fact)
    return _CODE_LINE.sub("", fact[len(name) + 2:] if name else fact)


def named_subject(claim: str, name: str) -> str:
    """A model's sentence led by the name in code (`name`, a `subject`) its supporting sentence
    is about, when it names none of it: Qwen copied "Generate a random UUID." from
    "`uuid.uuid4()`: Generate a random UUID." and the Python user never learnt what to call
    (5 of 44 of its served sentences on the Python users' sets, 2026-11-28)."""
    bare = name.strip("`").split("(")[0].split(".")[-1]
    if not bare or re.search(rf"(?<!\w){re.escape(bare)}\b", claim, re.I):
        return claim
    return f"{name}: {claim}"


def copied(claim: str, text: str) -> bool:
    """Whether the words of `claim` come in one run in `text`, case and punctuation aside: a
    quote of it, or of part of one of its sentences."""
    return f" {' '.join(words(claim))} " in f" {' '.join(words(text))} "


def unrepeated(texts: Sequence[str]) -> list[str]:
    """Sentences as said one after another: one under the same code heading as the sentence
    before it does not name it again ("`sys.setrecursionlimit(limit)`: Set the maximum depth
    ... If the new limit is too low ...")."""
    out, last = [], None
    for text in texts:
        m = _SUBJECT.match(text)
        out.append(text[m.end():] if m and m.group(0) == last else text)
        last = m.group(0) if m else None
    return out


@dataclass(frozen=True)
class Support:
    score: float  # 0..1, blend of meaning and word evidence
    similarity: float  # cosine to the closest passage sentence
    coverage: float  # share of the claim's content words found in the passage
    novel: tuple[str, ...]  # claim words the passage does not have
    reason: str  # empty when supported, else why not
    sentence: int  # index of the closest passage sentence

    @property
    def supported(self) -> bool:
        return not self.reason


def same_family(novel: list[str], passage_words: set[str], embed: Callable | None,
                similarity: float) -> set[str]:
    """The novel words that are another form of a passage word ("fused" for "fusion", "spinal"
    for "spine"): the same first three letters and close in meaning by the embedder. Both are
    needed: "hospital" and "clinic" are close in meaning but name different places."""
    if embed is None or not novel:
        return set()
    pairs = [(w, p) for w in novel for p in passage_words if p[:3] == w[:3] and p != w]
    if not pairs:
        return set()
    vocab = sorted({x for pair in pairs for x in pair})
    vecs = dict(zip(vocab, embed(vocab)))
    return {w for w, p in pairs if float(vecs[w] @ vecs[p]) >= similarity}


def support(claim: str, claim_vec: np.ndarray, passage: list[str], passage_vecs: np.ndarray,
            threshold: float, zipf: float, embed: Callable | None = None,
            family_similarity: float = 1.0, hedges: bool = False,
            one_sentence: bool = False) -> Support:
    """Is `claim` supported by a passage, given as its statement sentences and their vectors?
    With `embed`, a word in another form than the passage's counts as the passage's. With
    `one_sentence`, its words must come from its closest sentence (with the one before, when
    that one leans on it: "This is called ..."), not from anywhere in the passage: a draft that
    joins one sentence's subject to another's predicate ("create_task() ... waits for all of
    them to finish", from a passage where gather() waits) is no longer supported. A claim whose
    words are a run of one sentence's (a quote, maybe without the name in code it starts with)
    is judged against that sentence, whichever is closest in meaning."""
    sims = passage_vecs @ claim_vec
    runs = [i for i, p in enumerate(passage) if copied(claim, p)]
    best = max(runs or range(len(passage)), key=lambda i: sims[i])
    similarity = float(sims[best])
    scope = passage
    if one_sentence:
        scope = passage[best - 1:best + 1] if best and leans_back(passage[best]) else [
            passage[best]]
    vocab = vocabulary(" ".join(scope))
    cw = content_words(claim)
    novel = [w for w in dict.fromkeys(cw) if not matches(stem(w), vocab)]
    family = same_family([w for w in novel if len(w) >= 4],
                         {w for w in words(" ".join(scope)) if len(w) >= 4}, embed,
                         family_similarity)
    novel = tuple(w for w in novel if w not in family)
    coverage = 1.0 - len(novel) / max(1, len(cw))
    score = 0.5 * similarity + 0.5 * coverage
    named = names(claim)
    rare = [w for w in novel if is_rare(w, zipf) or w in named]
    passage_words = set(words(" ".join(scope)))
    overclaims = [w for w in dict.fromkeys(words(claim))
                  if w in QUANTIFIERS and w not in passage_words]
    if not cw:
        reason = "says nothing checkable"
    elif rare:
        reason = "adds " + ", ".join(rare)
    elif overclaims:
        reason = "says " + ", ".join(overclaims) + " where the passage does not"
    elif negations(claim) != negations(passage[best]):
        reason = "negation differs from the passage"
    elif hedges and HEDGES & set(words(passage[best])) and not HEDGES & set(words(claim)):
        reason = "states as certain what the passage says may be"
    elif words(claim)[-1] in _DANGLING and words(claim)[-2:] != words(passage[best])[-2:]:
        reason = "unfinished sentence"  # unless the passage ends so too ("x refers to.")
    elif score < threshold:
        reason = f"support {score:.2f} < {threshold:.2f}"
    else:
        reason = ""
    return Support(score, similarity, coverage, novel, reason, best)
