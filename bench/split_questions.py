"""Validate and split the patient FAQ question set into a tuning half and a blind half.

Why: the questions were written by an outsider from the corpus alone; splitting them once, with
a fixed seed and stratified by kind, before anyone sees results lets the blind half measure how
the system does on questions nobody tuned against. Never tune on the blind half.

Items are sorted by id before shuffling, so re-running on tuning + blind reproduces the split:
    python bench/split_questions.py bench/data/faq_patients_tuning.jsonl \
        bench/data/faq_patients_blind.jsonl
"""
import json
import random
import sys
from pathlib import Path

SEED = 20261126
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus" / "failed-fusion-faq.txt"
OUT = ROOT / "bench" / "data"
# Conversations and instruction-like questions are split further (topic switch or not,
# answerable or not) so each half gets some of every variant.
KINDS = ["answerable", "unanswerable_near_miss", "unanswerable_other",
         "conversation/followup/ans", "conversation/followup/unans",
         "conversation/switch/ans", "conversation/switch/unans",
         "sounds_like_instruction/ans", "sounds_like_instruction/unans"]


def kind(item):
    ans = "ans" if item["answerable"] else "unans"
    if item.get("tag") == "sounds_like_instruction":
        return f"sounds_like_instruction/{ans}"
    if "turns" in item:
        return f"conversation/{'switch' if item.get('tag') == 'topic_switch' else 'followup'}/{ans}"
    if item["answerable"]:
        return "answerable"
    return "unanswerable_near_miss" if item["near_miss"] else "unanswerable_other"


def validate(items, faq):
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for it in items:
        if it["answerable"]:
            for s in it["expected_sources"]:
                assert 10 <= len(s) <= 60 and s in faq, (it["id"], s)
            for m in it["must_mention_any"]:
                assert m.lower() in faq.lower(), (it["id"], m)
        else:
            assert isinstance(it["near_miss"], bool) and it["why_unanswerable"], it["id"]


def main(paths):
    items = [json.loads(line) for p in paths
             for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip()]
    validate(items, CORPUS.read_text(encoding="utf-8"))
    rng = random.Random(SEED)
    halves = {"tuning": [], "blind": []}
    for k in KINDS:
        group = sorted((it for it in items if kind(it) == k), key=lambda it: it["id"])
        rng.shuffle(group)
        half = (len(group) + 1) // 2
        halves["tuning"] += group[:half]
        halves["blind"] += group[half:]
        print(f"{k:30} tuning {half:3}  blind {len(group) - half:3}")
    for name, rows in halves.items():
        text = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in rows)
        (OUT / f"faq_patients_{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
