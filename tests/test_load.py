"""Ten concurrent chats through the public /ask API of `python -m chatbot serve` on 127.0.0.1.

Each chat is its own `gradio_client.Client` (its own session, so its own history) and has two or
three turns, the second a follow-up ("Can it happen again?") that the pipeline reads with the
chat's previous question. Checked: every request is answered, or told cleanly that the server is
busy (the queue is set smaller than the number of chats so that answer happens too; the chat
then retries); no request hangs past the deadline; no follow-up carries another chat's question;
the server's memory does not keep growing from one round of chats to the next.

The extractive generator answers: with the local LLM, 2 rounds x 25 answers queue one at a time
at 1-4 s each on a shared 2-core machine, past the 2-minute budget. The server, sessions, queue
and grounding are the same; only the wording step is skipped.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from serving import served

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

CHATS = 10
QUEUE_SIZE = 6  # < CHATS: some requests find the queue full and are told so
ROUNDS = 2  # memory is compared between the end of round 1 and the end of round 2
DEADLINE_S = 120  # for all rounds together
BUSY_RETRIES = 40  # per request; each waits BUSY_WAIT_S: a chat never loops forever
BUSY_WAIT_S = 0.25
# Server RSS, measured over 25 rounds: +40-100 MB in the first round after warm-up, then
# +10-45 MB a round (allocator noise in Gradio's connection handling, not the pipeline: 240
# answers in one process, same thread or a new thread each time, stay within 5 MB), levelling
# off around +200 MB. A leak of a megabyte or two per answer breaks the first bound.
RSS_ROUND_GROWTH_MB = 90  # round 2 over round 1 (25 answers)
RSS_TOTAL_GROWTH_MB = 300  # the end over the warm-up
FOLLOW_UP = "Can it happen again?"  # "it": read with the chat's previous question
# The FAQ's own questions: each chat opens with a different one.
OPENERS = ["What is a failed fusion?", "What causes a failed fusion?",
           "What can be done if a spinal fusion failed?",
           "How do I know if my spinal fusion has failed?", "Can your spine curve after fusion?",
           "What happens if a screw comes loose after spinal fusion?",
           "Can failed back surgery be fixed?", "Can you have a second spinal fusion?",
           "Can you undo a spinal fusion?", "Can you redo a spinal fusion?"]
THIRD = "Is it serious?"  # every other chat has a third turn


def conversation(i: int) -> list[str]:
    return [OPENERS[i], FOLLOW_UP, *([THIRD] if i % 2 == 0 else [])]


def run_chat(url: str, i: int, deadline: float) -> tuple[list[dict], int]:
    """One chat, turn after turn; (the answers, how often the server said it was busy)."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    client, answers, busy = Client(url, verbose=False), [], 0
    try:
        for question in conversation(i):
            for _ in range(BUSY_RETRIES):
                job = client.submit(question, api_name="/ask")
                try:  # TimeoutError past the deadline: a hang fails the test
                    answers.append(job.result(timeout=max(deadline - time.monotonic(), 0.1)))
                    break
                except QueueError:
                    busy += 1
                    time.sleep(BUSY_WAIT_S)
            else:
                raise AssertionError(f"chat {i}: still busy after {BUSY_RETRIES} tries")
    finally:
        client.close()
    return answers, busy


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("load"), "--generator", "extractive",
                env={"CHATBOT_QUEUE_SIZE": str(QUEUE_SIZE)}) as running:
        yield running


def rss_mb(proc) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 1e6


def test_ten_concurrent_chats_keep_their_own_history(server):
    url, proc = server
    run_chat(url, 0, time.monotonic() + 60)  # warm-up: first answer, lazy imports
    start_mb = rss_mb(proc)
    t0 = time.monotonic()
    deadline = t0 + DEADLINE_S
    after: list[float] = []
    busy_total = 0
    for _ in range(ROUNDS):
        with ThreadPoolExecutor(CHATS) as pool:
            chats = list(pool.map(lambda i: run_chat(url, i, deadline), range(CHATS)))
        after.append(rss_mb(proc))
        busy_total += sum(busy for _, busy in chats)
        for i, (answers, _) in enumerate(chats):
            turns = conversation(i)
            assert [a["question"] for a in answers] == turns  # every turn answered, in order
            assert answers[0]["query"] == OPENERS[i]
            assert answers[1]["query"] == f"{FOLLOW_UP} ({OPENERS[i]})"  # its own history...
            others = [q for j, q in enumerate(OPENERS) if j != i]
            assert not any(q in a["query"] for a in answers for q in others)  # ...and no one else's
            if len(turns) == 3:  # read alone: nothing is near it with the follow-up either
                assert answers[2]["query"] == THIRD
            assert all(isinstance(a["answer"], str) and a["answer"] for a in answers)
    elapsed = time.monotonic() - t0
    requests = ROUNDS * sum(len(conversation(i)) for i in range(CHATS))
    log.info("%d chats x %d rounds, %d answers in %.1f s (%.2f s each); told busy %d times; "
             "server RSS %.0f MB after warm-up, %s MB after each round", CHATS, ROUNDS, requests,
             elapsed, elapsed / requests, busy_total, start_mb,
             ", ".join(f"{mb:.0f}" for mb in after))
    assert elapsed < DEADLINE_S
    assert after[-1] - after[0] < RSS_ROUND_GROWTH_MB
    assert after[-1] - start_mb < RSS_TOTAL_GROWTH_MB
