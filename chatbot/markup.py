"""Escaping what documents, users and the model wrote before it reaches a web page: it is data,
shown literally, never markup (an outside security trial's documents carried links and HTML)."""
from __future__ import annotations

import html
import re


def esc(text: str) -> str:
    return html.escape(text, quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+!|~$-])")
_MD_ORDERED_LIST = re.compile(r"^(\s*\d+)([.)])", re.M)
_MD_WEB = re.compile(r"(?i)(\b(?:https?|ftp):|\bwww)([/.])")  # where an autolink would begin


def md_escape(text: str) -> str:
    """Document or model text shown literally in a Markdown chat bubble. Bare web and e-mail
    addresses stay text too: Gradio's Markdown made a document's "www.fusion-cure.example" a
    live link, with the escapes in its address (outside security trial)."""
    text = _MD_ORDERED_LIST.sub(r"\1\\\2", _MD_SPECIAL.sub(r"\\\1", text))
    text = _MD_WEB.sub(r"\1\\\2", text).replace("@", "\\@")
    return html.escape(text, quote=False)  # after the backslashes, so entities stay intact
