"""A grounded, offline chatbot: answers only from the documents in a corpus, cites them, refuses
otherwise.

    from chatbot import Chatbot
    bot = Chatbot.from_settings(corpus_dir="corpus", index_dir="index")
    answer = bot.answer("What do pedicle screws do?")
    print(answer.text, [c.chunk.source for c in answer.citations])

Importing this package is cheap and changes nothing in the process (no environment variables,
no model, no torch): the names below load on first use, and models set offline mode as they load.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Answer", "Chatbot", "Settings"]

_HOMES = {"Answer": "chatbot.answer", "Chatbot": "chatbot.pipeline", "Settings": "chatbot.config"}

if TYPE_CHECKING:
    from chatbot.answer import Answer
    from chatbot.config import Settings
    from chatbot.pipeline import Chatbot


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'chatbot' has no attribute {name!r}")
