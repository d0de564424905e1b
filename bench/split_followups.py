"""Check the follow-up conversation sets and that their tuning / blind split reproduces.

Why: the conversations were written by an outsider from the corpora alone (see
bench/data/followups_README.md); they were split once, stratified by kind, before anyone saw
results. Re-splitting the union must give the same halves, so no item can drift between them.
Never tune on the blind half.

    python bench/split_followups.py [--pydocs DIR]   # exit 1 on a bad item or a changed split
"""
import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20261127
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
KINDS = ("answerable_follow_up", "near_miss", "topic_switch")


def kind(row: dict) -> str:
    if not row["answerable"]:
        return "near_miss"
    return "topic_switch" if row["tag"] == "topic_switch" else "answerable_follow_up"


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Sorted by id, each kind shuffled with one seeded generator, dealt tuning first."""
    rng, halves = random.Random(SEED), ([], [])
    rows = sorted(rows, key=lambda r: r["id"])
    for k in KINDS:
        stratum = [r for r in rows if kind(r) == k]
        rng.shuffle(stratum)
        for i, r in enumerate(stratum):
            halves[i % 2].append(r)
    return tuple(sorted(h, key=lambda r: r["id"]) for h in halves)


def problems(row: dict, faq_text: str, pydocs: Path | None) -> list[str]:
    """What is wrong with one item: its turns, and (answerable) sources that must be verbatim
    FAQ text or existing Python-docs pages."""
    rid, out = row["id"], []
    if not 2 <= len(row.get("turns", [])) <= 3:
        out.append(f"{rid}: needs 2-3 turns")
    if not row["answerable"]:
        return out + ([] if row.get("why_unanswerable") else [f"{rid}: say why unanswerable"])
    for text in row["expected_sources"] + (row["must_mention_any"] if "faq" in rid else []):
        if "faq" in rid and text not in faq_text:
            out.append(f"{rid}: not verbatim in the FAQ: {text!r}")
    if "py" in rid and pydocs:
        out += [f"{rid}: no page {p}" for p in row["expected_sources"]
                if not (pydocs / p).is_file()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pydocs", type=Path, help="Python docs corpus, to check page paths")
    args = parser.parse_args()
    faq_text, bad = FAQ.read_text(encoding="utf-8"), []
    for name in ("faq", "pydocs"):
        halves = [[json.loads(line) for line in (DATA / f"{name}_followups_{h}.jsonl").open()
                   if line.strip()] for h in ("tuning", "blind")]
        rows = halves[0] + halves[1]
        bad += [p for r in rows for p in problems(r, faq_text, args.pydocs)]
        again = split(rows)
        if [r["id"] for r in again[0]] != [r["id"] for r in halves[0]]:
            bad.append(f"{name}: the tuning / blind split does not reproduce")
        print(f"{name}: " + ", ".join(
            f"{k} {sum(kind(r) == k for r in halves[0])} + {sum(kind(r) == k for r in halves[1])}"
            for k in KINDS))
    for line in bad:
        print("problem:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
