"""Which HTML elements no reader sees. Their text is not what the documents say, and it is where
instructions to the assistant hide: an outside security trial's `display:none` div made the
model answer "revision surgery is never needed", and a re-test got past a first, literal version
with `display:/**/none`, `font-size:0.0px`, `<template>` and text moved off-screen.

An approximation of a browser, without one: inline styles and simple rules of the page's own
`<style>` blocks (`.name`, `#id`, `tag.name`). Text hidden by an external stylesheet, by script,
behind other elements, or coloured like a background set elsewhere, is still read.
"""
from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag

# Elements whose content a reader does not see: templates, fallback text of embedded media,
# a dialog until it is opened.
_UNSEEN_TAGS = frozenset("template object video audio canvas iframe".split())
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
_NUMBER = r"(-?(?:\d+\.?\d*|\.\d+))"
_END = r"(?![\w%.])"  # the number and its unit end here
_RULES = [  # (property pattern, test on the value)
    (re.compile(r"display:none\b"), None),
    (re.compile(r"visibility:(hidden|collapse)\b"), None),
    (re.compile(r"font-size:" + _NUMBER + r"(px|pt)?" + _END), lambda v, unit: v < 2),
    (re.compile(r"font-size:" + _NUMBER + r"(em|rem|%)" + _END),
     lambda v, unit: v < (10 if unit == "%" else 0.1)),
    (re.compile(r"opacity:" + _NUMBER + _END), lambda v, unit: v < 0.1),
    (re.compile(r"(?:left|top|right|bottom|text-indent|margin-left|margin-top):" + _NUMBER
                + r"(px|em|rem|%)?" + _END),
     lambda v, unit: v <= (-500 if unit in ("px", None) else -50)),
    (re.compile(r"transform:scale\(" + _NUMBER + r"\)"), lambda v, unit: v < 0.1),
    (re.compile(r"clip-path:(inset\((50|[5-9]\d|100)%|circle\(0)"), None),
    (re.compile(r"clip:rect\((?:0(?:px)?,?){4}\)"), None),
    (re.compile(r"color:transparent\b"), None),
]
_SIZE = re.compile(r"(?:^|;)(?:max-)?(height|width):[01](?:px)?(?:;|$)")  # sr-only: 1px
_COLOUR = re.compile(r"(?:^|;)color:([^;]+)")
_BACKGROUND = re.compile(r"(?:^|;)background(?:-color)?:([^;]+)")


def normal(style: str) -> str:
    """A style as these rules read it: no comments, escapes decoded, lower case, no spaces."""
    style = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), _COMMENT.sub("", style))
    return re.sub(r"\s+", "", style.lower()).replace("!important", "")


def hidden_style(style: str) -> bool:
    """Does this inline style (or rule body) hide its element's text from a reader?"""
    style = normal(style)
    for pattern, test in _RULES:
        for m in pattern.finditer(style):
            if test is None:
                return True
            value, unit = float(m.group(1)), (m.group(2) if m.lastindex >= 2 else None)
            if test(value, unit):
                return True
    if _SIZE.search(style) and "overflow:hidden" in style:
        return True
    colour, background = _COLOUR.search(style), _BACKGROUND.search(style)
    return bool(colour and background and colour.group(1) == background.group(1))


def hidden_selectors(soup: BeautifulSoup) -> tuple[set[str], set[str]]:
    """(class names, ids) that the page's own `<style>` rules hide."""
    classes: set[str] = set()
    ids: set[str] = set()
    for sheet in soup.find_all("style"):
        css = _COMMENT.sub("", sheet.get_text())
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
            if not hidden_style(body):
                continue
            for selector in selectors.split(","):
                last = selector.strip().split()[-1] if selector.strip() else ""
                classes.update(re.findall(r"\.([\w-]+)", last))
                ids.update(re.findall(r"#([\w-]+)", last))
    return classes, ids


def is_hidden(tag: Tag, classes: set[str], ids: set[str]) -> bool:
    """Is this element's text unseen: a hidden attribute, a closed dialog, a popover, an
    element that never renders its content, or a style that hides it?"""
    return (tag.name in _UNSEEN_TAGS or tag.has_attr("hidden") or tag.has_attr("popover")
            or (tag.name == "dialog" and not tag.has_attr("open"))
            or hidden_style(tag.get("style") or "")
            or not classes.isdisjoint(tag.get("class") or ())
            or tag.get("id") in ids)
