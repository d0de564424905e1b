"""Batch evaluation: does the bot find the right passage, cite it, say only what it supports,
and refuse what the documents do not cover? `python -m chatbot eval QUESTIONS.jsonl`.

Answer metrics are computed from the `to_dict()` JSON alone, as an outside reader would: the
support judge is re-run on each answer sentence against the passages it cites instead of
trusting the pipeline's own `supported` flags, so a bug in how answers are assembled (a citation
moved to the wrong sentence, a claim that slipped past the check) shows up here.
Citation recall and precision follow ALCE (Gao et al. 2023, "Enabling Large Language Models to
Generate Text with Citations"), with grounding.support as the entailment judge.

The parts: `cases` (the questions file), `metrics` (what is measured), `runner` (answering and
writing the results), `report` and `plots` (what people read).
"""
from chatbot.evaluation.cases import Case, load_cases, parse_case
from chatbot.evaluation.metrics import (LABELS, Judge, answer_metrics, calibrate,
                                        citation_validity, cited_sentences, first_hit_rank,
                                        passage_matches, passage_statements, retrieval_metrics,
                                        summarize)
from chatbot.evaluation.runner import evaluate, main, run

__all__ = ["Case", "LABELS", "Judge", "answer_metrics", "calibrate", "citation_validity",
           "cited_sentences", "evaluate", "first_hit_rank", "load_cases", "main", "parse_case",
           "passage_matches", "passage_statements", "retrieval_metrics", "run", "summarize"]
