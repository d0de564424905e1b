"""Which HTML elements no reader sees. Their text is not what the documents say, and it is where
instructions to the assistant hide: an outside security trial's `display:none` div made the
model answer "revision surgery is never needed", and two re-tests got past earlier, more literal
versions (`display:/**/none`, `font-size:0.0px`, `opacity:0%`, `<template>`, text moved
off-screen) and found visible text they dropped (print-only and mobile-menu rules).

An approximation of a browser, without one: inline styles, read declaration by declaration (the
last of a property wins), and the page's own `<style>` rules of a single class or id, outside
any `@media` block. Text hidden by an external stylesheet, a compound selector, script, CSS
variables or stacked partial transparency is still read.
"""
from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag

# Elements whose content a reader does not see: templates, fallback text of embedded media,
# options of a data list, annotations, a dialog until it is opened.
_UNSEEN_TAGS = frozenset("template object video audio canvas iframe datalist noembed noframes "
                         "annotation rp".split())
_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
_NUMBER = re.compile(r"^(?:calc\()?(-?(?:\d+\.?\d*|\.\d+))([a-z%]*)")
_ALL_ZERO = re.compile(r"^[\s(),0a-z%.]*$")  # "0 0, 0 0", "0px 0px": nothing but zeros
_TRANSPARENT = re.compile(r"^(transparent|rgba\(.*,\s*0?\.?0*\)|hsla\(.*,\s*0?\.?0*\)|"
                          r"#[0-9a-f]{3}0|#[0-9a-f]{6}00)$")
_NEUTRAL_COLOURS = frozenset({"inherit", "initial", "unset", "currentcolor", "revert"})
_SIMPLE_SELECTOR = re.compile(r"^(?:[a-z][a-z0-9]*)?([.#])([\w-]+)$", re.I)


def declarations(style: str) -> dict[str, str]:
    """An inline style as property -> value, the last of each property: no comments, escapes
    decoded, lower case, `!important` dropped."""
    style = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), _COMMENT.sub("", style)).lower()
    out = {}
    for part in style.split(";"):
        name, sep, value = part.partition(":")
        if sep:
            out[name.strip()] = value.replace("!important", "").strip()
    return out


def _number(value: str) -> tuple[float, str] | None:
    m = _NUMBER.match(value.strip())
    return (float(m.group(1)), m.group(2)) if m else None


def _tiny_font(value: str) -> bool:
    n = _number(value.split("/")[0].split()[-1] if value.split() else value)
    if n is None:
        return False
    size, unit = n
    return size < (10 if unit == "%" else 0.1 if unit in ("em", "rem", "vw", "vh", "vmin")
                   else 2)


def _far(value: str) -> bool:
    """An offset that moves content out of any window: -500px / -50em / -100% or beyond, or
    5000px and more to the right or below."""
    n = _number(value)
    if n is None:
        return False
    v, unit = n
    if unit in ("px", ""):
        return v <= -500 or v >= 5000
    return v <= (-100 if unit in ("%", "vw", "vh") else -50)


def _not_rendered(get) -> bool:
    return (get("display", "").startswith("none") or get("visibility", "") in ("hidden", "collapse")
            or get("content-visibility", "") == "hidden")


def _transparent(get) -> bool:
    opacity = _number(get("opacity", "1"))
    return ((opacity is not None and opacity[0] / (100 if opacity[1] == "%" else 1) < 0.1)
            or "opacity(0" in get("filter", "") or _TRANSPARENT.match(get("color", "")) is not None)


def _tiny(get) -> bool:
    return (_tiny_font(get("font-size", "")) or _tiny_font(get("font", ""))
            or (_number(get("zoom", "1")) or (1, ""))[0] < 0.1)


def _moved_away(get) -> bool:
    offsets = [get(p, "") for p in ("left", "top", "right", "bottom", "text-indent",
                                    "margin-left", "margin-top")]
    offsets += re.findall(r"translate[xy]?\(([^,)]+)", get("transform", ""))
    return any(map(_far, offsets))


def _scaled_to_nothing(get) -> bool:
    return bool(re.search(r"scale[xy]?\(\s*0?\.0*[,)\s]|scale[xy]?\(\s*0\s*[,)]",
                          get("transform", ""))) or _number(get("scale", "1")) == (0.0, "")


def _clipped(get) -> bool:
    clip_path, clip = get("clip-path", ""), get("clip", "")
    inset = re.match(r"inset\(([^)]*)\)", clip_path)
    if inset and any(v >= 50 for v, unit in filter(None, map(_number, inset.group(1).split()))
                     if unit == "%"):
        return True
    shape = re.match(r"(polygon|circle|rect)\((.*)\)", clip_path or clip)
    return bool(shape and _ALL_ZERO.match(shape.group(2)) or
                re.fullmatch(r"rect\(\s*(\d+)px[, ]+\1px[, ]+\1px[, ]+\1px\s*\)", clip))


def _boxed_in(get) -> bool:
    """A box of a pixel or less that cuts off what overflows it (the "screen reader only" trick)."""
    small = any((_number(get(p, "")) or (1e9, ""))[0] <= 1
                for p in ("height", "width", "max-height", "max-width"))
    return small and any(get(p, "") in ("hidden", "clip")
                         for p in ("overflow", "overflow-x", "overflow-y"))


def _colour_of_background(get) -> bool:
    colour, background = get("color"), get("background-color", get("background"))
    return bool(colour and colour == background and colour not in _NEUTRAL_COLOURS)


_CHECKS = (_not_rendered, _transparent, _tiny, _moved_away, _scaled_to_nothing, _clipped,
           _boxed_in, _colour_of_background)


def hidden_style(style: str) -> bool:
    """Does this inline style (or rule body) hide its element's text from a reader? Most
    elements have none: skipping them took 40 % off reading the Python docs."""
    if ":" not in style:
        return False  # no declaration: nothing but the defaults, which hide nothing
    get = declarations(style).get
    return any(check(get) for check in _CHECKS)


def hidden_selectors(soup: BeautifulSoup) -> tuple[set[str], set[str]]:
    """(class names, ids) that the page's own `<style>` rules of a single class or id hide, for
    every medium: a rule inside `@media` (print, a phone's menu) or a compound selector
    (`.tab:not(.active)`, `.menu .sub`) says nothing about the element elsewhere."""
    classes: set[str] = set()
    ids: set[str] = set()
    for sheet in soup.find_all("style"):
        if sheet.get("media", "all").strip().lower() not in ("all", "screen", ""):
            continue
        css = _COMMENT.sub("", sheet.get_text())
        css = re.sub(r"@[^{;]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css)  # @media {...} blocks
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
            if not hidden_style(body):
                continue
            for selector in selectors.split(","):
                m = _SIMPLE_SELECTOR.match(selector.strip())
                if m:
                    (classes if m.group(1) == "." else ids).add(m.group(2))
    return classes, ids


def is_hidden(tag: Tag, classes: set[str], ids: set[str]) -> bool:
    """Is this element's text unseen: a hidden attribute, a closed dialog, a popover, an
    element that never renders its content, or a style that hides it?"""
    return (tag.name in _UNSEEN_TAGS or tag.has_attr("hidden") or tag.has_attr("popover")
            or (tag.name == "dialog" and not tag.has_attr("open"))
            or (tag.name == "title" and tag.find_parent("body") is not None)
            or hidden_style(tag.get("style") or "")
            or not classes.isdisjoint(tag.get("class") or ())
            or tag.get("id") in ids)
