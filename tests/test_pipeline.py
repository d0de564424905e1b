"""End to end with the real packaged models on the seed FAQ."""
import json
import logging
from pathlib import Path

import pytest
from fakes import ScriptedGenerator

from chatbot.answer import Code
from chatbot.answerability import Coverage
from chatbot.config import load_settings
from chatbot.pipeline import Answer, Chatbot, standalone_query

pytestmark = pytest.mark.slow
DEV = Path(__file__).parent / "data" / "dev.jsonl"


def _check_citations(answer: Answer) -> None:
    """Every [n] in the text is a citation, and every citation is a passage that was retrieved."""
    retrieved = {h.chunk.id for h in answer.hits}
    numbers = {c.n for c in answer.citations}
    assert all(c.chunk.id in retrieved for c in answer.citations)
    for claim in answer.claims:
        assert set(claim.citations) <= numbers
    import re
    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)} == numbers
    for c in answer.citations:
        for a, b in c.spans:
            assert c.chunk.start <= a < b <= c.chunk.end


def test_a_covered_question_gets_a_full_cited_answer(bot):
    answer = bot.answer("Can you undo a spinal fusion?")
    assert answer.coverage is Coverage.FULL and answer.outcome.code.value == "answered"
    _check_citations(answer)
    cited = [c for c in answer.citations if c.chunk.title == "Can you undo a spinal fusion?"]
    assert cited, answer.to_dict()
    assert "ProDisc" in answer.text
    assert answer.wording in ("model", "quotes")
    assert answer.timings["total_ms"] > 0 and "first_token_ms" in answer.timings


@pytest.mark.parametrize("question", [
    "What is the capital of Australia?",
    "Can you give me a recipe for banana bread?",
])
def test_out_of_corpus_questions_are_refused_with_the_sources_searched(bot, question):
    answer = bot.answer(question)
    assert answer.refused and answer.coverage is Coverage.NONE
    assert answer.text.startswith("The documents I have do not cover this.")
    assert "failed-fusion-faq.txt" in answer.text
    assert "care team" in bot.settings.refusal_advice  # the FAQ's corpus/chatbot.toml
    assert answer.text.endswith(bot.settings.refusal_advice)  # where to turn instead
    assert answer.citations == []


@pytest.mark.parametrize("question, missing", [
    ("What dose of ibuprofen should I take?", "ibuprofen"),
    ("How much does revision spine surgery cost?", "cost"),
    ("How many weeks do I have to avoid bending after my fusion?", "no "),
    ("What percentage of spinal fusions fail?", "no number"),  # "a percentage of patients ..."
])
def test_near_misses_are_never_answered_in_full_and_name_what_is_missing(bot, question, missing):
    answer = bot.answer(question)
    assert answer.coverage is not Coverage.FULL, answer.to_dict()["answerability"]
    assert missing in answer.note or answer.outcome.code is Code.NO_CLOSE_PASSAGE, answer.note
    if answer.outcome.code is Code.NOT_COVERED:  # after "The documents I have do not cover this"
        assert answer.note.startswith("they "), answer.note
    if answer.coverage is Coverage.PARTIAL:  # says what is missing, then quotes the nearest topic
        assert answer.text.startswith(answer.preamble) and answer.citations
        _check_citations(answer)
        # and where to turn, as a refusal does: the question itself is not answered
        assert answer.advice == bot.settings.refusal_advice
        assert answer.text.endswith(answer.advice) and answer.to_dict()["advice"]


@pytest.mark.slow
def test_a_missing_word_is_named_as_the_user_wrote_it(extractive_bot):
    """An outside trial read "(they do not mention france, capital.)"."""
    assert extractive_bot.answer("Is Ibuprofen OK after my op?").note.endswith(
        "do not mention Ibuprofen")


@pytest.mark.slow
def test_a_missing_word_the_corpus_has_elsewhere_is_missing_from_the_passages(
        settings, faq_index, embedder, tmp_path):
    """"heals" is in the FAQ ("heal"), not in the passages found; "rods" is nowhere in it. An
    outside trial read "The documents do not mention chiropractor" where the FAQ has it."""
    from chatbot.pipeline import Chatbot

    plain = Chatbot(settings.replace(generator="extractive", corpus_dir=tmp_path),
                    index=faq_index, embedder=embedder)  # without the FAQ's glossary
    answer = plain.answer("Do the rods and screws need to come out after the bone heals?")
    assert answer.coverage is Coverage.PARTIAL
    assert answer.note.startswith("The documents do not mention rods;"), answer.note
    assert "the passages found do not mention heals" in answer.note


@pytest.mark.slow
def test_a_partial_answer_quotes_the_next_passage_too(settings, faq_index, embedder, tmp_path):
    """The top passage is not always the answering one, least of all when the scorer doubts:
    "what are the rods and screws for?" quoted only the loosening passage, while the next one
    says what they are for (key facts of partial answers on the tuning sets: 43 -> 50 of 66).
    Without the FAQ's glossary, which knows that rods are hardware."""
    from chatbot.pipeline import Chatbot

    bot = Chatbot(settings.replace(generator="extractive", corpus_dir=tmp_path), index=faq_index,
                  embedder=embedder)
    answer = bot.answer("what are the rods and screws actually there for?")
    assert answer.coverage is Coverage.PARTIAL, answer.to_dict()["answerability"]
    assert "internal splint" in answer.text, answer.text
    titles = {c.chunk.title for c in answer.citations}  # the answering section among them
    assert "What causes a failed fusion?" in titles and len(titles) >= 2, titles
    for c in answer.citations:  # the preamble names every section it quotes
        assert f"“{c.chunk.title}”" in answer.preamble, answer.preamble
    _check_citations(answer)


def test_no_sentence_the_passages_do_not_support_reaches_the_answer(bot):
    """Whatever the model drafts, only claims that passed the support check are in the text."""
    for question in ["Can you undo a spinal fusion?",
                     "How do I know if my spinal fusion has failed?"]:
        answer = bot.answer(question)
        _check_citations(answer)
        kept = [c.text for c in answer.claims if c.supported]
        dropped = [c.text for c in answer.claims if not c.supported]
        assert kept, answer.to_dict()
        assert all(k in answer.text for k in kept)
        assert not any(d in answer.text for d in dropped if d not in " ".join(kept))


def test_stream_yields_only_checked_sentences_then_the_answer(bot):
    events = list(bot.stream("Can your spine curve after fusion?"))
    answer = events[-1]
    assert isinstance(answer, Answer) and all(isinstance(e, str) for e in events[:-1])
    assert answer.wording == "model"  # Qwen's draft passes: the browser test relies on it
    assert "".join(events[:-1]) == answer.text and len(events) >= 2  # streamed = the answer


def test_a_repeated_sentence_is_served_once_and_a_cut_off_one_not_at_all(settings, faq_index,
                                                                        embedder):
    """Drafts that hit the token limit end mid-sentence, and small models repeat themselves."""
    from chatbot import grounding
    from chatbot.pipeline import Chatbot

    class Repeating:
        name = "local"

        def stream(self, question, facts):
            self.first = first = grounding.answer_sentences(facts[0][1])[0]
            yield f"{first} [1] {first} [1] {first.rstrip('.')}"  # the last one never ends

    model = Repeating()
    bot = Chatbot(settings, index=faq_index, generator=model, embedder=embedder)
    answer = bot.answer("What are the symptoms of a failed fusion?")
    served = [c.text for c in answer.claims if c.supported]  # then the evidence it left out
    assert served[0] == model.first and answer.wording == "model", answer.to_dict()
    assert [c.reason for c in answer.claims if not c.supported] == ["unfinished sentence"]
    assert len(set(served)) == len(served) and answer.text.count(model.first) == 1


def test_a_model_sentence_is_served_without_its_preamble(settings, faq_index, embedder):
    from chatbot import grounding
    from chatbot.pipeline import Chatbot

    class Prefacing:
        name = "local"

        def stream(self, question, facts):
            self.first = grounding.answer_sentences(facts[0][1])[0]
            yield f"Based on, {self.first[0].lower()}{self.first[1:]} [1]"

    model = Prefacing()
    bot = Chatbot(settings, index=faq_index, generator=model, embedder=embedder)
    answer = bot.answer("What are the symptoms of a failed fusion?")
    assert answer.claims[0].text == model.first and answer.claims[0].supported
    assert answer.text.startswith(model.first) and "Based on" not in answer.text


def test_markers_are_never_a_claim_however_the_model_places_them(settings, faq_index, embedder):
    """Seen on the FAQ tuning runs: "... heals.\\n[1] [2] [3]" streamed token by token served "[1]"
    as a claim ("adds 1"), and "[2] In most cases ..." after a line break was judged as adding
    "2": markers anywhere are markers (#10)."""
    from chatbot import grounding
    from chatbot.pipeline import Chatbot

    class Marking:
        name = "local"

        def stream(self, question, facts):
            firsts = [grounding.answer_sentences(text)[0] for _, text in facts]
            self.said = [x for x in firsts if not grounding.leans_back(x)][:2]  # no "This is"
            draft = f"{self.said[0]}\n[1] [2] [3]\n[2] {self.said[1]}"
            yield from (draft[i:i + 2] for i in range(0, len(draft), 2))  # as tokens arrive

    model = Marking()
    bot = Chatbot(settings, index=faq_index, generator=model, embedder=embedder)
    answer = bot.answer("What are the symptoms of a failed fusion?")
    assert len(model.said) == 2, "the test needs two facts"
    drafted = [c for c in answer.claims if not c.quoted]
    assert [c.text for c in drafted] == model.said, answer.to_dict()
    assert all(c.supported for c in drafted) and answer.wording == "model"


def test_a_model_answer_quotes_the_evidence_it_left_out_after_its_own(settings, faq_index,
                                                                      embedder):
    """#9 key fact: on the tuning runs model-worded answers named it less often than quoted ones
    (FAQ dev 11 of 18 vs 17 of 21): the model's checked sentence may rest on a side one."""
    from chatbot import grounding
    from chatbot.pipeline import Chatbot

    class Sidestepping:
        name = "local"

        def stream(self, question, facts):
            self.sentences = [x for _, text in facts for x in grounding.answer_sentences(text)]
            self.own = [x for x in self.sentences if not grounding.leans_back(x)][-1]
            yield f"{self.own} [{facts[-1][0]}]"

    model = Sidestepping()
    bot = Chatbot(settings, index=faq_index, generator=model, embedder=embedder)
    *shown, answer = bot.stream("What are the symptoms of a failed fusion?")
    closest, own = model.sentences[0], model.own
    assert closest != own, model.sentences
    served = [c.text for c in answer.claims if c.supported]
    assert answer.wording == "model" and served[:2] == [own, closest], answer.to_dict()
    assert set(model.sentences) <= set(served) and len(set(served)) == len(served)  # each once
    # the JSON says which sentences are the passages' own words
    assert [c["quoted"] for c in answer.to_dict()["claims"]] == [False] + [True] * (len(served) - 1)
    assert "".join(shown) == answer.text  # streamed as it will stay


def test_a_rejected_draft_still_decides_which_quote_comes_first(settings, faq_index, embedder):
    """Issue #9's "What do pedicle screws do?" led with the loosening sentence. The model's draft
    says more than the passage (so it is not served) but is about the splint: that leads."""
    from chatbot.pipeline import Chatbot

    overstating = ScriptedGenerator("They work as an internal splint that holds the spine "
                                    "still until it fuses, always.")
    bot = Chatbot(settings, index=faq_index, generator=overstating, embedder=embedder)
    answer = bot.answer("What do pedicle screws do?")
    served = [c.text for c in answer.claims if c.supported]
    assert answer.wording == "quotes" and len(served) >= 2, answer.to_dict()
    assert "splint" in served[0] and any("loosen" in s for s in served[1:])
    assert [c.quoted for c in answer.claims] == [not c.reason for c in answer.claims]


@pytest.mark.parametrize("rewording", [False, True])
def test_a_draft_in_other_words_than_its_passage_is_quoted_instead(settings, faq_index,
                                                                   embedder, rewording):
    """An outsider's labels: of the model's rewordings the judge let through, about one in four
    said more than the passage; of its copies, about one in 80. By default only a copy is
    served as the model's; `serve_rewording` serves the rewording."""
    from chatbot.pipeline import REWORDED, Chatbot

    reworded = ("Spinal hardware may be used as an internal splint to hold the spine while it "
                "fuses after surgery. [1]")
    bot = Chatbot(settings.replace(serve_rewording=rewording), index=faq_index,
                  generator=ScriptedGenerator(reworded), embedder=embedder)
    answer = bot.answer("What do pedicle screws do?")
    drafted = [c for c in answer.claims if not c.quoted]
    assert len(drafted) == 1, answer.to_dict()
    assert drafted[0].supported is rewording, answer.to_dict()
    assert drafted[0].reason == ("" if rewording else REWORDED)
    assert answer.wording == ("model" if rewording else "quotes")
    assert ("while it fuses after spine surgery" in answer.text) is not rewording  # quoted
    copy = ScriptedGenerator("Pedicle screws may be used as an internal splint to hold the spine "
                             "while it fuses after spine surgery. [1]")
    answer = Chatbot(settings, index=faq_index, generator=copy, embedder=embedder).answer(
        "What do pedicle screws do?")
    assert answer.wording == "model", answer.to_dict()  # a run of the passage's words


def test_a_partly_covered_question_is_read_again_in_the_documents_words(settings, faq_index,
                                                                       embedder, tmp_path):
    """The rewrite is taken only when the documents clearly answer it; the answer says so.
    Without the FAQ's glossary, which answers the lay question in full at the first reading.
    On by default (the nine tuning sets: 14 answerable questions to full, one near miss)."""
    from chatbot.generation import ExtractiveGenerator
    from chatbot.pipeline import Chatbot

    settings = settings.replace(corpus_dir=tmp_path)

    class Rewriting(ExtractiveGenerator):
        def rewrite(self, question):
            return {"could the screws snap?": "Can pedicle screws loosen or break?",
                    "what should I eat to help my bones heal faster":
                        "What diet helps a spinal fusion heal faster?"}.get(question)

    bot = Chatbot(settings.replace(generator="extractive"),
                  index=faq_index, generator=Rewriting(), embedder=embedder)
    lay = bot.answer("could the screws snap?")
    assert lay.coverage is Coverage.FULL and lay.query == "Can pedicle screws loosen or break?"
    assert "read as" in lay.note and lay.signals["p_first_reading"] < settings.answer_full
    assert "loosen" in lay.text
    near_miss = bot.answer("what should I eat to help my bones heal faster")
    assert near_miss.coverage is not Coverage.FULL, near_miss.to_dict()
    assert near_miss.query == near_miss.question
    off = Chatbot(settings.replace(generator="extractive", rewrite_partial=False),
                  index=faq_index, generator=Rewriting(), embedder=embedder)
    assert off.answer("could the screws snap?").coverage is Coverage.PARTIAL


def test_the_local_model_rewrites_a_question_on_one_line(bot):
    rewritten = bot.generator.rewrite("can the metalwork actually snap??")
    assert rewritten and "\n" not in rewritten and rewritten != "can the metalwork actually snap??"


def test_closing_the_stream_stops_the_model(settings, faq_index):
    """Stop in the web page closes the stream: the model must stop decoding, not run on."""
    from chatbot.generation import LlamaCppGenerator

    class Endless(LlamaCppGenerator):
        def request(self, question, facts):
            return {**super().request(question, facts), "ignore_eos": True}  # 300 tokens, always

    generator = Endless(settings.replace(max_new_tokens=300))
    stream = generator.stream("What do pedicle screws do?", [(1, "Screws hold the spine.")])
    assert [next(stream) for _ in range(3)]
    stream.close()
    assert generator.chunks <= 6
    assert sum(1 for _ in generator.stream("Why?", [(1, "Screws hold it.")])) >= 290  # can fail


def test_a_crawling_model_says_once_that_the_cpu_is_busy(settings, caplog):
    """An outside trial's `ask` took 37-74 s while another job used the cores, and nothing said
    why. Here every speed is "slow" (the threshold is set above any real one)."""
    from chatbot.generation import LlamaCppGenerator

    generator = LlamaCppGenerator(settings.replace(slow_decode_tok_s=1e9))
    facts = [(1, "Pedicle screws may be used as an internal splint while the bones fuse.")]
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert "".join(generator.stream("What do pedicle screws do?", facts))
    notes = [r.message for r in caplog.records if "tokens a second" in r.message]
    assert len(notes) == 1 and "another program is probably using the CPU" in notes[0]
    assert "llm_threads = 1" in notes[0]


def test_a_fresh_process_reads_the_instructions_from_a_file_not_the_model(settings, tmp_path):
    """#12: every new `ask` computed the prompt's fixed instructions (~70 tokens, ~0.35 s of
    its first answer on 2 cores). The first process saves what llama.cpp computed; the next
    restores it, computes only the rest of the prompt, and writes the same draft."""
    from chatbot import models
    from chatbot.generation import LlamaCppGenerator

    models.gguf_path(settings.llm_model, settings.cache_dir)  # joined once, wherever this runs
    (tmp_path / "models").symlink_to(settings.cache_dir / "models")  # no second 491 MB join
    fresh = settings.replace(cache_dir=tmp_path)
    facts = [(1, "Pedicle screws may be used as an internal splint while the bones fuse.")]
    drafts, restored, reused = [], [], []
    for _ in range(2):
        generator = LlamaCppGenerator(fresh)
        restored.append(generator.instructions_restored)
        drafts.append("".join(generator.stream("What do pedicle screws do?", facts)))
        reused.append(generator.last_timings["cache_n"])  # prompt tokens not computed
        del generator
    assert restored == [False, True] and reused[1] >= 50, reused
    assert [p.suffix for p in (tmp_path / "prompts").iterdir()] == [".bin"]  # saved whole
    assert drafts[0] == drafts[1] and "splint" in drafts[0]


def test_other_processes_cannot_use_the_in_process_model_over_http(bot):
    """llama.cpp in the process also listens on a free port of 127.0.0.1, where any user of the
    machine could run the model or write its prompt-cache files: only this process's key is
    accepted there."""
    import json
    import urllib.error
    import urllib.request

    address = bot.generator.server.listening_address
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 2}),
                       ("/slots/0?action=save", {"filename": "theirs.bin"})):
        request = urllib.request.Request(address + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code == 401, path


_THIS = ("This is called failed back or failed fusion syndrome, which is characterized by "
         "intractable pain and an inability to return to normal activities.")
_CAUSE = ("An instrumented fusion can fail if there is not enough support to hold the spine "
          "while it is fusing.")
_LEAD = "After any spine surgery, a percentage of patients may still experience pain."


@pytest.mark.parametrize("draft, served", [
    (f"{_THIS} [1]", []),  # this what?
    (f"{_CAUSE} [1] {_THIS} [2]", [_CAUSE]),  # a re-test: the wrong "this", a wrong definition
    (f"{_LEAD} [1] {_THIS} [1]", [_LEAD, _THIS]),  # after what "this" is: the model's wording
])
def test_a_sentence_that_says_this_is_shown_with_what_this_is(settings, faq_index, embedder,
                                                               draft, served):
    """An outside trial's patients read "An instrumented fusion can fail ... This is called failed
    back syndrome" as a definition: a quoted "This ..." sentence comes with the sentence it
    points back to, and a drafted one must follow that sentence."""
    from chatbot.pipeline import Chatbot

    bot = Chatbot(settings, index=faq_index, generator=ScriptedGenerator(draft),
                  embedder=embedder)
    answer = bot.answer("What do doctors mean by failed fusion syndrome?")
    drafted = [c for c in answer.claims if not c.quoted]
    assert [c.text for c in drafted if c.supported] == served, answer.to_dict()
    assert all(c.reason == "points back to a sentence the answer does not have"
               for c in drafted if not c.supported)
    import re
    pair = re.escape(_LEAD) + r" \[(\d)\] " + re.escape(_THIS) + r" \[\1\]"
    assert re.search(pair, answer.text) and answer.text.count(_LEAD) == 1, answer.text
    _check_citations(answer)  # each quoted sentence with its own marker


def test_a_stopped_answer_keeps_the_sentences_already_shown(settings, faq_index, embedder):
    """An outside trial pressed Stop and lost the checked sentences it was reading: they stay,
    with their sources, and nothing is added after the Stop."""
    from chatbot import grounding
    from chatbot.answer import Code
    from chatbot.pipeline import Chatbot

    class Talking:
        name = "local"

        def stream(self, question, facts):
            said = [x for _, text in facts for x in grounding.answer_sentences(text)]
            yield f"{said[0]} [1]"
            yield from (f" {x} [1]" for x in said[1:])

    bot = Chatbot(settings, index=faq_index, generator=Talking(), embedder=embedder)
    events: list = []  # Stop is pressed once the first sentence is shown
    for event in bot.stream("What are the symptoms of a failed fusion?",
                            cancelled=lambda: bool(events)):
        events.append(event)
    *shown, answer = events
    assert answer.outcome.code is Code.STOPPED and len(shown) == 1, answer.to_dict()
    assert answer.text == shown[0] and [c.n for c in answer.citations] == [1]


def test_the_model_takes_words_from_its_facts_several_tokens_a_step(bot):
    """Prompt lookup (llm_draft_tokens) is on: a draft that repeats its fact is guessed from
    the prompt and checked in batches, which is where the faster answers come from."""
    fact = "Pedicle screws may be used as an internal splint to hold the spine while it fuses."
    text = "".join(bot.generator.stream("What do pedicle screws do?", [(1, fact)]))
    assert text and bot.generator.last_timings.get("draft_n_accepted", 0) > 0


def test_follow_up_carries_the_previous_question():
    """#9: any next question is searched with the last one along ("and for dicts?" has no "it"
    to tell it leans back); one that says it changes the subject is not."""
    assert standalone_query("How is it treated?", ["What is failed back surgery syndrome?"]) == \
        "How is it treated? (What is failed back surgery syndrome?)"
    assert standalone_query("and for dicts?", ["How do I sort a list?"]) == \
        "and for dicts? (How do I sort a list?)"
    assert standalone_query("What do pedicle screws do?", []) == "What do pedicle screws do?"
    switch = "Different question: is it ok to fly after my op?"
    assert standalone_query(switch, ["Can the screws break?"]) == switch


def test_follow_up_is_answered_from_the_right_section(extractive_bot):
    answer = extractive_bot.answer("Can they come loose?", ["What are pedicle screws used for?"])
    assert not answer.refused
    assert "loosen" in answer.text
    # The example: "that" is the failed fusion, the answer is how you would notice it.
    answer = extractive_bot.answer("How would I know if that's happened to me?",
                                   ["What is a failed fusion?"])
    assert answer.citations[0].chunk.title == "How do I know if my spinal fusion has failed?"
    assert "Symptoms may include chronic pain" in answer.text.split("[1]")[0]


@pytest.mark.parametrize("question", ["what are the rods and screws actually there for?",
                                      "what do the screws do"])
def test_a_lower_passage_with_the_questions_telling_word_is_heard(extractive_bot, question):
    """Patients' "what are the screws for?" got only "screws loosen or break over time": the
    sentence that answers (screws as an internal splint) is the second passage's, under the
    cosine bar, and "screws" is the word that tells it apart from the passages on fusion."""
    answer = extractive_bot.answer(question)
    assert answer.coverage.value == "full" and "internal splint" in answer.text, answer.text


@pytest.mark.parametrize("question, lead", [
    ("can a spinal fusion be reversed?", "ProDisc"),
    ("can injections help my back pain after the fusion didnt work", "injections")])
def test_the_answer_leads_with_the_sentence_holding_the_questions_telling_word(
        extractive_bot, question, lead):
    """Patients' sets: ordered by cosine alone, these led with "Instrumented spinal fusion is a
    common procedure ..." and the two-level fusion sentence, closest to the whole question but
    not its point; the telling word ("reversed" ~ "reversal", "injections") now leads."""
    answer = extractive_bot.answer(question)
    assert lead in answer.text.split("[1]")[0], answer.text


def test_a_new_question_after_another_is_read_alone(extractive_bot):
    """Read with the last question only when that brings the passages clearly closer: an
    unrelated next question is answered as if asked first."""
    question = "Can bending too much ruin my fusion?"
    after = extractive_bot.answer(question, ["What are pedicle screws used for?"])
    alone = extractive_bot.answer(question)
    assert after.query == question
    assert after.text == alone.text
    # ...also when nothing is near it read with the last question: an outside trial's refusal
    # said "Searched for: my op didn't work, what now? (and how would I know ...)"
    question = "my op didn't work, what now?"
    after = extractive_bot.answer(question, ["and how would I know if that happened to me?"])
    assert after.query == question
    assert after.text == extractive_bot.answer(question).text


def test_an_overlong_question_is_refused_before_anything_reads_it(extractive_bot, monkeypatch):
    """Outside security trial: a 10 MB question held the only worker for 43 s."""
    from chatbot.answer import Code

    def unread(texts, *args, **kwargs):
        raise AssertionError("the overlong question was embedded")

    monkeypatch.setattr(extractive_bot.embedder, "embed", unread)
    limit = extractive_bot.settings.max_question_chars
    answer = extractive_bot.answer("Why? " * (limit // 5 + 1), history=["x" * 10_000_000])
    assert answer.outcome.code is Code.TOO_LONG and answer.refused and not answer.hits
    assert answer.text.startswith("Please ask a shorter question") and f"{limit:,}" in answer.text
    assert len(answer.to_dict()["question"]) == limit


def test_answer_json_shape(extractive_bot):
    d = extractive_bot.answer("Can you ruin a spinal fusion?").to_dict()
    assert {"question", "answer", "refused", "citations", "retrieved", "timings"} <= set(d)
    c = d["citations"][0]
    assert {"n", "source", "title", "start", "end", "text"} <= set(c)
    faq = Path(__file__).resolve().parents[1] / "corpus" / c["source"]
    assert faq.read_text(encoding="utf-8")[c["start"]:c["end"]] == c["text"]
    json.dumps(d)


def test_dev_set_figures(store_bot):
    """Regression guard on the development set, a tuning set (extractive wording, so it runs in
    seconds): the blind figures are in the README."""
    rows = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    full_wrong = refused = full = mentioned = 0
    answerable = [r for r in rows if r.get("answerable", True)]
    for r in rows:
        turns = r.get("turns") or [r["question"]]
        answer = store_bot.answer(turns[-1], turns[:-1])
        _check_citations(answer)
        if not r.get("answerable", True):
            full_wrong += answer.coverage is Coverage.FULL
            continue
        refused += answer.refused
        full += answer.coverage is Coverage.FULL
        mentioned += any(m.lower() in answer.text.lower() for m in r["must_mention_any"])
    assert full_wrong <= 2  # of 15
    assert refused / len(answerable) <= 0.05
    assert full / len(answerable) >= 0.85
    assert mentioned / len(answerable) >= 0.65


def test_a_passage_with_no_statement_is_not_an_answer(tmp_path, embedder):
    """A heading with fragments under it matches well but says nothing that could be cited."""
    from chatbot.config import load_settings
    from chatbot.pipeline import Chatbot

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "list.md").write_text(
        "# Pedicle screws\n\nScrews.\n\nRods and plates.\n")
    settings = load_settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index",
                             generator="extractive")
    answer = Chatbot(settings, embedder=embedder).answer("What are pedicle screws?")
    assert answer.refused and "no sentence" in answer.note


def test_a_word_many_documents_use_does_not_make_a_question_uncovered(tmp_path, embedder):
    """'automatically' is in 20 of 21 files, just not in the passages that answer: it is how this
    corpus talks, not a topic it lacks. Below the common-word bar the same word refuses."""
    from chatbot.config import load_settings
    from chatbot.pipeline import Chatbot

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(20):
        (corpus / f"tool{n:02}.md").write_text(
            f"# Tool {n}\n\nTool {n} backs up the database automatically every night at "
            f"{n} o'clock.\n")
    (corpus / "rotate.md").write_text(
        "# Log rotation\n\nThe rotate command deletes old log files and keeps the newest ones.\n\n"
        "# Rotation schedule\n\nLog rotation runs once a week and compresses last week's log "
        "files.\n\n"
        "# Rotation settings\n\nThe keep setting says how many old log files rotation leaves "
        "in place.\n")
    question = "Which log files get deleted automatically?"
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "index",
                             generator="extractive")
    answer = Chatbot(settings, embedder=embedder).answer(question)
    assert not answer.refused and answer.citations[0].chunk.source == "rotate.md"
    strict = Chatbot(settings.replace(common_word_min_docs=50), embedder=embedder).answer(question)
    assert strict.signals["term_min"] < answer.signals["term_min"] == 1.0
    assert strict.signals["term_gap"] > answer.signals["term_gap"] == 0.0


def test_a_sentence_two_passages_share_is_quoted_once(tmp_path, embedder):
    """Python's docs say "Return True if the values a and b are close to each other ..." on the
    math and the cmath page; answers quoted it twice, as if two sources agreed."""
    from chatbot.config import load_settings
    from chatbot.pipeline import Chatbot

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shared = "The nightly backup copies the database to the archive server at two o'clock."
    (corpus / "backup.md").write_text(
        f"# Backups\n\n{shared} Each copy is kept for thirty days.\n")
    (corpus / "archive.md").write_text(
        f"# The archive server\n\n{shared} The archive server sits in a locked room.\n")
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "index")
    inventing = ScriptedGenerator("Backups are encrypted with a key that changes every hour. [1]")
    bot = Chatbot(settings, generator=inventing, embedder=embedder)
    answer = bot.answer("When does the nightly backup copy the database?")
    served = [c.text for c in answer.claims if c.supported]
    assert not answer.refused and served.count(shared) == 1, answer.to_dict()


def test_quoted_sentences_lose_their_lead_ins(extractive_bot):
    for question in ("What do pedicle screws do?",
                     "Can pedicle screws break over time?"):
        answer = extractive_bot.answer(question)
        assert answer.coverage is Coverage.FULL, answer.to_dict()["answerability"]
        assert "Therefore" not in answer.text and "Chappuis" not in answer.text, answer.text
        assert answer.text[0].isupper()
        _check_citations(answer)


@pytest.mark.slow
def test_the_sentence_that_goes_on_about_the_best_one_comes_with_it(tmp_path):
    """An outside trial asked what a service costs and what it includes, and got the price only:
    "It includes ..." is not close to the whole question, but it goes on about the sentence
    that is."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "repairs.md").write_text(
        "# Repairs\n\n## Flat tyre repair\n\nA flat tyre repair costs 18 euros per wheel.\n\n"
        "## Basic service\n\nThe basic service costs 65 euros. It includes adjusting the brakes "
        "and gears, checking the chain for wear and truing the wheels. A basic service usually "
        "takes two working days.\n", encoding="utf-8")
    bot = Chatbot.from_settings(corpus_dir=tmp_path / "docs", index_dir=tmp_path / "index",
                                generator="extractive")
    answer = bot.answer("How much does a basic service cost and what does it include?")
    assert "65 euros" in answer.text and "adjusting the brakes" in answer.text, answer.text


@pytest.mark.slow
def test_a_sentence_under_a_code_heading_is_quoted_and_judged_with_its_name(tmp_path):
    """An API reference says what a function does under its signature, without naming it:
    "Delete an entire directory tree ..." quoted alone did not tell a Python user what to call
    (users' tuning set: the key fact missing from 19 answers, 5 of them in a cited heading),
    and a draft that named the function added words its sentence lacked ("adds rmtree")."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "shutil.md").write_text(
        "# shutil: high-level file operations\n\n## Directory and files operations\n\n"
        "### shutil.rmtree(path)\n\nDelete an entire directory tree; path must point to a "
        "directory. Files that cannot be removed raise an exception.\n\n"
        "### shutil.copyfile(src, dst)\n\nCopy the contents of the file named src to a file "
        "named dst.\n\n### shutil.disk_usage(path)\n\nReturn disk usage statistics about "
        "the given path as a named tuple.\n", encoding="utf-8")
    # the drafts below are rewordings, served only with serve_rewording (quoted by default)
    settings = dict(corpus_dir=tmp_path / "docs", index_dir=tmp_path / "index",
                    serve_rewording=True)
    question = "How do I delete a directory tree with everything in it?"
    # Qwen's marker as the object (users' tuning set, 3 of 47 drafts: "use [1]." was judged an
    # unfinished sentence) stands for the name its fact is about
    draft = "To delete an entire directory tree, use [1]."
    answer = Chatbot(load_settings(**settings), generator=ScriptedGenerator(draft)).answer(
        question)
    assert answer.wording == "model", answer.to_dict()
    assert answer.text.startswith("To delete an entire directory tree, use "
                                  "`shutil.rmtree(path)`. [1]"), answer.text
    quoted = Chatbot.from_settings(**settings, generator="extractive").answer(question)
    assert "`shutil.rmtree(path)`: Delete an entire directory tree" in quoted.text, quoted.text
    _check_citations(quoted)
    draft = "To delete an entire directory tree, use shutil.rmtree(path). [1]"
    answer = Chatbot(load_settings(**settings), generator=ScriptedGenerator(draft)).answer(
        question)
    assert answer.wording == "model" and answer.text.startswith("To delete"), answer.to_dict()
    # A draft that copies the sentence without its name is served with it, once in a row
    # (Qwen's "Generate a random UUID." from "`uuid.uuid4()`: Generate a random UUID.").
    draft = ("Delete an entire directory tree, and path must point to a directory. [1] "
             "Files that cannot be removed raise an exception. [1]")
    answer = Chatbot(load_settings(**settings), generator=ScriptedGenerator(draft)).answer(
        question)
    assert answer.wording == "model", answer.to_dict()
    assert answer.text.startswith("`shutil.rmtree(path)`: Delete an entire directory tree, and "
                                  "path"), answer.text
    assert answer.text.count("shutil.rmtree") == 1, answer.text
    _check_citations(answer)
    # Its "this" is the entry's name: not a sentence the answer lacks (Qwen's "This function
    # returns successive overlapping pairs ..." from `itertools.pairwise`)
    draft = "This function deletes an entire directory tree. [1]"
    answer = Chatbot(load_settings(**settings), generator=ScriptedGenerator(draft)).answer(
        question)
    assert answer.text.startswith("`shutil.rmtree(path)`: This function deletes an entire "
                                  "directory tree. [1]"), answer.to_dict()["claims"]


def test_the_answering_sentence_of_a_lower_passage_is_said(extractive_bot):
    """"What are the screws in my back for?" ranks the loosening passage first; the splint
    sentence sits in the third, and at the old cut-off (0.5, chosen on dev alone) the answer
    never said it (`second_passage_score`)."""
    answer = extractive_bot.answer("What are the screws in my back for?")
    assert answer.coverage is Coverage.FULL and "splint" in answer.text, answer.text


def test_a_draft_cut_off_by_the_token_limit_is_not_served(settings, faq_index, embedder):
    """Qwen ran out of tokens at "(e.g." and the cut sentence, which loses the passage's "only
    after extensive non-surgical ... approaches", was served (outside labels, 2026-11-28)."""
    draft = ("A two-level fusion may be considered for patients with severe, disabling pain that "
             "occurs at two levels of the spine (e.g.")
    answer = Chatbot(settings, index=faq_index, generator=ScriptedGenerator(draft),
                     embedder=embedder).answer("Could they fuse two levels if I hurt at both?")
    assert [c.reason for c in answer.claims if not c.quoted] == ["unfinished sentence"]
    assert "only after extensive non-surgical" in answer.text, answer.text


def test_a_product_name_the_documents_never_write_is_not_answered_in_full(extractive_bot):
    """The FAQ writes "ProDisc"; "MobiDisc" is another maker's disc, which it never names: the
    ProDisc passage is no answer about it (the corpus's CamelCase names, `Snapshot.names`)."""
    assert "ProDisc" in extractive_bot.snapshot.names
    named = extractive_bot.answer("Can a ProDisc implant be used instead of a fusion?")
    assert named.coverage is Coverage.FULL, named.to_dict()["answerability"]
    other = extractive_bot.answer("Can a MobiDisc implant be used instead of a fusion?")
    assert other.coverage is not Coverage.FULL and other.text.count("MobiDisc") == 1, other.text
