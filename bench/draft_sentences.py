"""Dump the local model's draft sentences with the facts it was given and the judge's verdict,
for hand labels of support (issue #10: judge agreement on what the model actually writes).

    python -m bench.draft_sentences QUESTIONS.jsonl [...] --out bench/out/drafts.jsonl \
        [--corpus DIR --index DIR]

Only tuning halves belong here: blind halves stay unseen until the final report.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterator

from chatbot import grounding, index
from chatbot.config import load_settings
from chatbot.generation import Generator, make_generator
from chatbot.pipeline import Chatbot

log = logging.getLogger(__name__)


class Recording:
    """A generator that remembers the facts it was shown and what it wrote."""

    def __init__(self, inner: Generator):
        self.inner, self.name, self.facts, self.draft = inner, inner.name, [], ""

    def stream(self, question: str, facts: list[tuple[int, str]]) -> Iterator[str]:
        self.facts, self.draft = facts, ""
        for piece in self.inner.stream(question, facts):
            self.draft += piece
            yield piece


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("questions", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--index", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = load_settings(corpus_dir=args.corpus, index_dir=args.index)
    recorder = Recording(make_generator(settings))
    # An existing index is used as it is (no rebuild), so drafts come from a fixed index.
    found = args.index is not None and (args.index / index.MANIFEST_FILE).exists()
    bot = Chatbot(settings, index=index.load(args.index) if found else None, generator=recorder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for path in args.questions:
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "question" not in row:  # a conversation or a comment row
                    continue
                recorder.draft = ""
                answer = bot.answer(row["question"])
                if not recorder.draft or answer.coverage.value != "full":
                    continue
                verdicts = {c.text: c for c in answer.claims}
                for sentence in grounding.answer_sentences(recorder.draft):
                    text, cited = grounding.split_citations(sentence)
                    claim = verdicts.get(text)
                    if not text or claim is None:
                        continue
                    out.write(json.dumps({
                        "id": row["id"], "question": row["question"], "sentence": text,
                        "cited": cited, "facts": recorder.facts, "judge": claim.supported,
                        "reason": claim.reason}) + "\n")
            log.info("%s done", path)


if __name__ == "__main__":
    main()
