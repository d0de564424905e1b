"""The answerability signals and the calibrated three-way decision, with the real embedder."""
import numpy as np
import pytest

from chatbot import answerability
from chatbot.answerability import Coverage, Scorer, Signals
from chatbot.config import Settings

TREATMENTS = ("Treatment for failed back surgery syndrome may include physical therapy, nerve "
              "blocks, medications, injections, or a chronic pain management program.")


def _signals(**changes) -> Signals:
    base = dict(dense=0.6, sentence=0.6, title=0.6, term_min=1.0, term_gap=0.0, literals=0.0,
                quantity=0.0)
    return Signals(**{**base, **changes})


def test_the_shipped_weights_load_and_order_the_obvious_cases():
    s = Settings()
    scorer = Scorer.load(s.answer_full, s.answer_partial)
    covered = scorer.probability(_signals(dense=0.75, sentence=0.75, title=0.75))
    missing_topic = scorer.probability(_signals(term_min=0.2, term_gap=0.3))
    unrelated = scorer.probability(_signals(dense=0.2, sentence=0.2, title=0.2, term_min=0.1,
                                            term_gap=0.4))
    assert covered > missing_topic > unrelated
    assert scorer.decide(covered) is Coverage.FULL
    assert scorer.decide(unrelated) is Coverage.NONE


def test_a_count_is_answered_by_a_number_of_that_thing():
    """"how many kilos ...?" and "how many compiled regex patterns ...?" were answered in full:
    the first from "two levels", the second from "flags=0" in the signature its passage
    sentence is said with (Python near-miss and FAQ tuning sets, 2026-11-28)."""
    from chatbot import grounding

    kilos = answerability.counted("how many kilos am I allowed to lift after spinal fusion")
    assert kilos == ["kilos"]
    assert not answerability.gives_count_of("It occurs at two levels of the spine.", kilos)
    assert answerability.gives_count_of("Lift no more than 5 kilos at first.", kilos)
    assert answerability.counted("How many levels can be fused?") == ["levels"]
    assert answerability.gives_count_of("A fusion at two levels of the spine", ["levels"])
    # asked for a way, not a count
    assert not answerability.counted("how can I work out how many days there are between "
                                     "two dates?")
    fact = ("`re.compile(pattern, flags=0)`: The compiled versions of the most recent patterns "
            "passed to re.compile() are cached.")
    assert answerability.gives_quantity(fact)
    assert not answerability.gives_quantity(grounding.unnamed(fact))
    # nor is one in the code a sentence shows ("roughly how many requests per second can
    # http.server handle?" was answered in full from an example serving on port 8000)
    example = ("Code to create and run the server looks like this:\n\ndef run():\n"
               "    server_address = ('', 8000)\n    httpd.serve_forever()")
    assert not answerability.gives_quantity(grounding.unnamed(example))
    assert grounding.unnamed(">>> len(x)\n3\nIt counts them.").endswith("It counts them.")
    # a code line is one line: blank lines of spaces before prose do not take the prose along
    assert answerability.gives_quantity(grounding.unnamed("Intro:\n\n  \n  It takes 5 days."))


def test_decide_maps_probability_to_three_outcomes():
    n = len(answerability.FEATURES)
    scorer = Scorer((1.0,) * n, 0.0, (0.0,) * n, (1.0,) * n, full=0.6, partial=0.3)
    assert [scorer.decide(p) for p in (0.9, 0.6, 0.45, 0.3, 0.1)] == [
        Coverage.FULL, Coverage.FULL, Coverage.PARTIAL, Coverage.PARTIAL, Coverage.NONE]


@pytest.mark.slow
def test_term_coverage_is_literal_first_then_by_meaning(embedder):
    cover = answerability.term_coverage("Would acupuncture or injections help?", TREATMENTS,
                                        embedder.embed)
    assert cover["injections"] == 1.0  # literally there
    assert cover["acupuncture"] < 0.6  # a treatment the passage never names
    # Question framing ("happened", "kind") is not a topic the passage must cover.
    assert "happened" not in answerability.term_coverage("What kind of thing happened?",
                                                         TREATMENTS, embedder.embed)
    # nor who it is about: "The documents do not mention husband" (a fresh blind set)
    asked = answerability.term_coverage("Can physical therapy help my husband's mum?",
                                        TREATMENTS, embedder.embed)
    assert "husband's" not in asked and "mum" not in asked, asked


def test_a_contraction_typed_without_its_apostrophe_is_not_a_topic(embedder):
    """Patients type "doesnt", "hes", "whats": read as typed they were the question's rarest
    words, topics the passages never cover (a fresh set's lay questions fell to partial)."""
    from chatbot.text import content_words, words

    asked = answerability.term_coverage("whats wrong if hes still sore and the fusion doesnt "
                                        "work?", TREATMENTS, embedder.embed)
    assert not {"whats", "what's", "hes", "he's", "doesnt", "doesn't"} & set(asked), asked
    assert words("doesnt, cant") == ["doesn't", "can't"]  # negations, which the judge checks
    # words that are words as typed stay so
    assert content_words("ill shed wed dads") == ["ill", "shed", "wed", "dads"]


def test_an_amount_needs_a_number_not_only_a_unit():
    """The issue's "how many days in hospital?" was answered from "several days or weeks"."""
    assert not answerability.gives_quantity("The pain may reappear several days or weeks later.")
    assert not answerability.gives_quantity("A percentage of patients may still experience pain.")
    assert answerability.gives_quantity("Most patients do well even 8 years after surgery.")
    assert answerability.gives_quantity("A fusion at two levels of the spine.")
    # "once" starting a clause says when: a fresh blind set's "how long does it take for the
    # bones to fuse?" was answered in full with "Once the bone has fused, ..."
    assert not answerability.gives_quantity("Once the bone has fused, it will not curve.")
    assert answerability.gives_quantity("Take one tablet once a day.")


def test_a_share_needs_a_share_not_any_number():
    """The dev set's "What percentage of spinal fusions are successful?" was answered in full
    from "two levels of the spine (e.g. L4-L5 and L5-S1)": a number, not a share."""
    assert not answerability.gives_share("A fusion at two levels of the spine.")
    assert not answerability.gives_share("A percentage of patients may still experience pain.")
    for given in ("About 30% of patients need a revision.", "It is 1.25x faster.",
                  "One in five patients has pain.", "Half of the patients do well."):
        assert answerability.gives_share(given), given
    two_levels = ["A two-level fusion may be considered for severe pain at two levels."]
    same = lambda ws: np.full((len(ws), 4), 0.5)  # noqa: E731 (no word is a synonym here)
    sig = answerability.signals("What percentage of spinal fusions are successful?", 0.5, 0.5,
                                0.5, two_levels[0], two_levels, same)
    assert sig.quantity == 1.0
    # how much faster: a ratio, not a version number (a Python tuning near miss answered in full)
    removed = ["The module will be removed in Python 3.13."]
    sig = answerability.signals("How much faster is 3.13 than 3.11?", 0.5, 0.5, 0.5, removed[0],
                                removed, same)
    assert sig.quantity == 1.0
    # ... and so does "how many times faster" (a Python near miss: "pickle faster than json")
    pickle = ["Pickle can serialize objects of up to 4 GB with protocol 4."]
    sig = answerability.signals("Is pickle faster than json? How many times faster?", 0.5, 0.5,
                                0.5, pickle[0], pickle, same)
    assert sig.quantity == 1.0


def test_an_amount_of_time_needs_that_unit():
    """The held-out "How many hours does a spinal fusion operation usually last?" was answered in
    full from "two levels", dev's "How many weeks does it take to recover?" from "8 years"."""
    same = lambda ws: np.full((len(ws), 4), 0.5)  # noqa: E731 (no word is a synonym here)
    given = ["Most patients do well even 8 years after surgery, at two levels."]
    for question in ("How many hours does a spinal fusion operation usually last?",
                     "my mum is 70, how many weeks will she be in hospital"):
        sig = answerability.signals(question, 0.5, 0.5, 0.5, given[0], given, same)
        assert sig.quantity == 1.0, question
    assert answerability.gives_amount_in("Rest for 6-8 weeks.", "week")
    assert answerability.gives_amount_in("It takes six hours.", "hour")
    # asked as a way, not an amount: the general rule (a number) holds
    how = answerability.signals("how can I work out how many days there are between two dates?",
                                0.5, 0.5, 0.5, given[0], given, same)
    assert how.quantity == 0.0


@pytest.mark.slow
def test_signals_name_what_is_missing_and_see_an_unmet_quantity(embedder):
    sig = answerability.signals("How many days of acupuncture would help?", 0.5, 0.5, 0.5,
                                TREATMENTS, [TREATMENTS], embedder.embed)
    assert "acupuncture" in sig.missing
    assert sig.quantity == 1.0 and sig.term_min < 0.6
    given = answerability.signals("How many weeks of physical therapy?", 0.5, 0.5, 0.5, TREATMENTS,
                                  ["Physical therapy lasts six weeks."], embedder.embed)
    assert given.quantity == 0.0


@pytest.mark.slow
def test_a_word_the_corpus_has_elsewhere_is_told_apart(embedder):
    """An outside trial's patients read "The documents do not mention chiropractor" where a
    passage that was not retrieved says "chiropractic care": untrue. Such a word is missing from
    the passages found, not from the documents. The gap counts toward the decision either way."""
    args = ("Would a chiropractor help?", 0.5, 0.5, 0.5, TREATMENTS, [TREATMENTS], embedder.embed)
    alone = answerability.signals(*args)
    assert "chiropractor" in alone.missing and not alone.elsewhere
    corpus = frozenset({"chiropract", "care", "physic", "therapi"})
    known = answerability.signals(*args, corpus=corpus)
    assert known.missing == alone.missing and known.elsewhere == ("chiropractor",)
    assert known.term_gap == alone.term_gap and known.term_min == alone.term_min


@pytest.mark.slow
def test_a_word_weighs_what_the_question_loses_without_it(embedder):
    """Occlusion weight: the topic of a question carries it, an aside does not, however rare."""
    drive = answerability.weight("when am I allowed to drive again after spinal fusion?",
                                 ["allowed", "drive"], embedder.embed)
    assert drive["drive"] > 2 * drive["allowed"]
    aside = answerability.weight("would that explain why my back pain got worse?",
                                 ["explain", "back", "pain"], embedder.embed)
    assert aside["explain"] < Settings().missing_word_share * max(aside.values())


@pytest.mark.slow
def test_an_aside_is_never_named_as_missing(extractive_bot):
    answer = extractive_bot.answer("what happens if one of the screws works itself loose")
    assert "works" not in answer.signals["missing"] and "mention works" not in answer.text
    assert answer.citations, answer.text
