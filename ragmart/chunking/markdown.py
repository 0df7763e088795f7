"""Markdown cleaning: policy pages as they are written -> plain Markdown the chunker can read.

Front matter is split off, Liquid tags and HTML comments are removed, HTML headings and list
items become their Markdown forms, other known HTML tags are dropped (block tags leave a line
break), and anything that only looks like a tag (``<employee id>``) is kept as text.
"""

from __future__ import annotations

import html
import re


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_BLOCK_TAGS = _names(
    "address article aside blockquote caption center dd details dialog div dl dt fieldset "
    "figcaption figure footer form header hgroup hr main nav ol p pre section summary table "
    "tbody tfoot thead tr ul"
)
_CELL_TAGS = frozenset({"td", "th"})
_INLINE_TAGS = _names(
    "a abbr area audio b bdi bdo big br button canvas cite code col colgroup data del dfn em "
    "embed font i iframe img input ins kbd label li link map mark meta object option picture "
    "q s samp select small source span strike strong sub sup svg textarea time track tt u var "
    "video wbr"
)
_KNOWN_TAGS = _BLOCK_TAGS | _CELL_TAGS | _INLINE_TAGS

_LIQUID_COMMENT = re.compile(
    r"\{%-?\s*comment\s*-?%\}.*?\{%-?\s*endcomment\s*-?%\}", re.DOTALL | re.IGNORECASE
)
_LIQUID = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DROPPED_ELEMENTS = re.compile(
    r"<(script|style|template|noscript)\b[^>]*>.*?</\1\s*>", re.DOTALL | re.IGNORECASE
)
_ATTRS = r"(?:\s(?:[^<>\"']|\"[^\"]*\"|'[^']*')*)?"
_HTML_HEADING = re.compile(rf"<h([1-6]){_ATTRS}>(.*?)</h\1\s*>", re.DOTALL | re.IGNORECASE)
_LI_OPEN = re.compile(rf"<li{_ATTRS}>", re.IGNORECASE)
_TAG = re.compile(rf"</?([A-Za-z][A-Za-z0-9-]*){_ATTRS}/?>")
_FRONT_MATTER_LINE = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:(?:[ \t]+(.*?))?[ \t]*$")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _strip_tags(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name == "br" or name in _BLOCK_TAGS:
            return "\n"
        if name in _CELL_TAGS:
            return " "
        if name in _KNOWN_TAGS:
            return ""
        return m.group(0)  # not HTML (e.g. "<employee id>"): keep as text

    return _TAG.sub(repl, text)


def _html_heading(m: re.Match[str]) -> str:
    inner = " ".join(_strip_tags(m.group(2)).split())
    return f"\n\n{'#' * int(m.group(1))} {inner}\n\n" if inner else "\n\n"


def _split_front_matter(text: str) -> tuple[dict[str, str], str]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        return {}, text  # no closing fence: not front matter
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        m = _FRONT_MATTER_LINE.match(line)
        if not m:
            continue  # nested values, list items, comments, anything odd
        value = (m.group(2) or "").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        fields[m.group(1)] = value
    return fields, "\n".join(lines[end + 1 :])


def clean_markdown(content: str) -> tuple[dict[str, str], str]:
    """Split off YAML front matter and strip Liquid/HTML noise from a Markdown page.

    Returns ``(front_matter_fields, cleaned_markdown)``. Front matter parsing is deliberately
    shallow: top-level ``key: value`` lines only, quotes removed, anything else ignored.
    """
    text = content.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    front, text = _split_front_matter(text)
    text = _LIQUID_COMMENT.sub("", text)
    text = _LIQUID.sub("", text)
    text = _HTML_COMMENT.sub("", text)
    text = _DROPPED_ELEMENTS.sub("", text)
    text = _HTML_HEADING.sub(_html_heading, text)
    text = _LI_OPEN.sub("\n- ", text)
    text = _strip_tags(text)
    text = html.unescape(text)
    text = text.replace("\u00a0", " ").replace("\u200b", "").replace("\ufeff", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUNS.sub("\n\n", text)
    return front, text.strip("\n")

