"""Batch evaluation: input handling, the metrics, the report, with the real models on the real FAQ."""
import copy
import json
from pathlib import Path

import pytest

from chatbot import evaluation as ev
from chatbot.evaluation import metrics

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def test_malformed_lines_are_skipped_with_their_line_numbers():
    lines = [
        '{"id": "ok1", "question": "What is a failed fusion?"}',
        "{not json",
        "",
        '["a", "list"]',
        '{"id": "noq", "answerable": false}',
        '{"id": "ok1", "question": "Same id again?"}',
        '{"id": "bad", "question": "Q?", "expected_sources": "not a list"}',
        '{"id": "ok2", "turns": ["First?", "Then?"], "answerable": false, "extra": 1}',
    ]
    cases, problems = ev.load_cases(lines)
    assert [c.id for c in cases] == ["ok1", "ok2"]
    assert cases[1].question == "Then?" and cases[1].history == ("First?",) and not cases[1].answerable
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert "duplicate id" in problems[3] and "expected_sources" in problems[4]


def test_retrieval_metrics_from_ranks():
    retrieved = [{"source": "docs/a.txt", "text": "alpha beta"}, {"source": "b.txt", "text": "gamma delta"}]
    assert ev.first_hit_rank(retrieved, ["a.txt"]) == 1  # a file name matches the source's end
    assert ev.first_hit_rank(retrieved, ["gamma"]) == 2  # a snippet matches the text
    assert ev.first_hit_rank(retrieved, ["zeta"]) is None
    assert ev.retrieval_metrics(2, 3) == {"hit@1": 0.0, "hit@3": 1.0, "rr": 0.5, "rank": 2}
    assert ev.retrieval_metrics(None, 3)["rr"] == 0.0


def test_citation_markers_stay_with_their_sentence():
    answer = "Screws hold the spine. [1] Loose screws hurt [2]. No marker here."
    assert ev.cited_sentences(answer) == [("Screws hold the spine.", [1]), ("Loose screws hurt.", [2]),
                                          ("No marker here.", [])]


def test_citation_validity_needs_a_retrieved_passage():
    passage = {"source": "f.txt", "text": "Screws hold the spine."}
    result = {"answer": "Screws hold the spine. [1] They do [2].", "retrieved": [passage],
              "citations": [{"n": 1, **passage, "start": 10, "end": 32, "spans": [[10, 32]]},
                            {"n": 2, "source": "f.txt", "text": "Not retrieved.", "start": 0, "end": 14,
                             "spans": [[0, 14]]}]}
    assert ev.citation_validity(result) == (1, 2)


@pytest.mark.parametrize("claim, reworded", [
    ("Screws hold the spine in place.", False),  # the passage's sentence, copied
    ("screws hold the spine", False),  # a run of it, whatever the case and punctuation
    ("The screws keep the spine still.", True),  # the model's own words
])
def test_the_models_own_wording_is_told_from_a_copied_sentence(claim, reworded):
    """An answer in the model's wording whose sentences only copy the passages is a quote in
    all but name: the summary reports both shares."""
    result = {"citations": [{"n": 1, "text": "Intro. Screws hold the spine in place. More."}],
              "claims": [{"text": "Intro.", "supported": True, "quoted": True},
                         {"text": claim, "supported": True, "quoted": False},
                         {"text": "Screws keep it still.", "supported": False, "quoted": False}]}
    assert metrics.reworded(result) is reworded


def test_passage_statements_drop_headings_and_labels():
    text = "Can you undo a spinal fusion?\n\nOverview. A device called the ProDisc Implant may help."
    assert ev.passage_statements(text) == ["A device called the ProDisc Implant may help."]


def test_a_quote_without_its_repeated_name_rests_on_its_passage(embedder):
    """After the first sentence under a name in code, answers quote the rest without the name
    (`grounding.unrepeated`); the evaluation's judge must see them as the passage says them."""
    passage = ("#### dataclasses.replace(obj, /, **changes)\n\nCreates a new object of the same "
               "type as obj. It is expected that init=False fields will be rarely and "
               "judiciously used.")
    statements = ev.passage_statements(passage)
    quote = "It is expected that init=False fields will be rarely and judiciously used."
    assert quote in statements and f"`dataclasses.replace(obj, /, **changes)`: {quote}" in statements
    judge = metrics.Judge(embedder, 0.75, 4.0)
    assert metrics.judge_sentence(judge, quote, [1], {1: statements})["supported"]


@pytest.mark.parametrize("name", ["dev.jsonl", "heldout.jsonl"])
def test_question_sets_parse_and_quote_the_faq(name):
    """Every expected snippet occurs verbatim in the FAQ, else hit@k would silently be 0."""
    faq = (ROOT / "corpus" / "failed-fusion-faq.txt").read_text(encoding="utf-8")
    cases, problems = ev.load_cases((DATA / name).read_text(encoding="utf-8").splitlines())
    assert not problems
    assert all(snippet in faq for c in cases for snippet in c.expected_sources)
    assert all(c.expected_sources for c in cases if c.answerable)


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.slow
def test_retrieval_only_hit_and_miss(tmp_path, extractive_bot):
    questions = _write(tmp_path / "q.jsonl", [
        {"id": "hit", "question": "Can you undo a spinal fusion?", "expected_sources": ["ProDisc Implant"]},
        {"id": "miss", "question": "Can you undo a spinal fusion?", "expected_sources": ["nowhere in the FAQ"]},
        {"id": "off", "question": "What is the capital of Australia?", "answerable": False},
        "{broken",
    ])
    k = extractive_bot.settings.top_k
    summary = ev.run(questions, tmp_path / "out", extractive_bot, retrieval_only=True, progress=False)
    assert summary["retrieval"] == {"n": 2, "hit@1": 0.5, f"hit@{k}": 0.5, "mrr": 0.5}
    assert "answers" not in summary and summary["skipped_lines"][0].startswith("line 4")
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["hit", "miss", "off"] and "answer" not in rows[0]
    assert rows[1]["metrics"]["rank"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.md", "results.jsonl", "retrieval_scores.png", "summary.json"]
    assert [f["id"] for f in summary["failures"]] == ["miss"]


@pytest.mark.slow
def test_cli_retrieval_only(tmp_path, settings, faq_index):
    from chatbot.__main__ import main

    questions = _write(tmp_path / "q.jsonl", [{"id": "a", "question": "What are pedicle screws used for?",
                                               "expected_sources": ["internal splint"]}])
    out = tmp_path / "out"
    code = main(["eval", str(questions), "--corpus", str(settings.corpus_dir), "--index",
                 str(settings.index_dir), "--out", str(out), "--retrieval-only", "-k", "2"])
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["retrieval"]["hit@2"] == 1.0


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory, extractive_bot):
    out = tmp_path_factory.mktemp("eval-dev")
    summary = ev.run(DATA / "dev.jsonl", out, extractive_bot, progress=False)
    return summary, out


@pytest.mark.slow
def test_dev_set_with_extractive_answers(dev_run):
    summary, out = dev_run
    a = summary["answers"]
    assert a["citation_validity"] == 1.0
    # the extractive generator quotes the passages, so every sentence is supported by its citation
    assert a["citation_recall"] == 1.0 and a["citation_precision"] == 1.0
    assert a["judge_disagreements"] == 0
    assert a["model_wording_rate"] == a["model_reworded_rate"] == 0.0  # nothing is the model's
    # a tuning set: the scorer answers no more than 2 of its 15 unanswerables in full
    assert a["unanswerable_full"] <= 2 / 15 and a["false_refusal_rate"] <= 0.05
    assert a["answerable_full"] >= 0.85
    assert summary["retrieval"]["n"] == 44 and summary["retrieval"]["hit@4"] >= 0.9
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert sorted(p.name for p in out.iterdir()) == [
        "latency.png", "report.md", "results.jsonl", "retrieval_scores.png", "summary.json", "support.png"]
    report = (out / "report.md").read_text()
    for heading in ("## Retrieval", "## Answers", "## Support judge calibration", "## Worst cases",
                    "![support](support.png)"):
        assert heading in report
    assert len((out / "results.jsonl").read_text().splitlines()) == 59


@pytest.mark.slow
def test_judge_rerun_catches_a_tampered_answer(dev_run, extractive_bot):
    """The metrics judge the JSON, not the pipeline's flags: an invented sentence slipped into an
    answer, marked supported and cited, is caught, and a citation to a missing passage is invalid."""
    _, out = dev_run
    row = next(json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
               if json.loads(line)["id"] == "a27")
    assert not row["refused"]
    tampered = copy.deepcopy(row)
    invented = "The ProDisc Implant is guaranteed to last thirty years."
    tampered["answer"] += f" {invented} [1] It is made of titanium. [7]"
    tampered["claims"].append({"text": invented, "supported": True, "citations": [1], "reason": ""})
    judge = ev.Judge(extractive_bot.embedder, extractive_bot.settings.support_threshold,
                     extractive_bot.settings.claim_zipf)
    case = ev.parse_case(row, "x")
    m = ev.answer_metrics(tampered, case, judge)
    assert m["citation_recall"] < 1.0 and m["judge_disagreements"] == [invented]
    assert m["valid_citations"] == m["citations"] - 1
    assert ev.answer_metrics(row, case, judge)["citation_recall"] == 1.0


@pytest.mark.slow
def test_calibration_agrees_with_hand_labels(dev_run):
    """run() calibrates the judge on tests/data/support_labels.jsonl (`calibrate` is that)."""
    cal = dev_run[0]["calibration"]
    assert cal["labels"] == 105 and cal["current"]["threshold"] == 0.75
    assert cal["current"]["accuracy"] >= 0.85 and cal["current"]["false_support_rate"] <= 0.1
    assert cal["best"] in cal["table"]
    assert all(cal["best"]["cost"] <= row["cost"] for row in cal["table"])
