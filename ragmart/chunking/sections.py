"""Markdown -> sections (a heading trail and its blocks), and a section's type from its headings.

A section is the text under one heading, down to the next heading of any level; its path is
the trail of headings above it ("Leave types > Sick leave"). Its blocks are what blank lines
delimit (paragraphs, list runs, tables), fenced code kept whole; a loose list item (one
separated from its list by a blank line) is folded back into its list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

SECTION_TYPES = ("definitions", "scope", "exceptions", "effective_dates", "other")

_SECTION_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("definitions", r"\bdefinition|\bglossary|\bkey terms?\b|\bterms used\b|\bmeaning"),
        (
            "scope",
            r"\bscope\b|\bapplies\b|\bapplicability\b|\bwho this\b|\bcoverage\b|\beligib",
        ),
        ("exceptions", r"\bexception|\bexempt|\bwaiver|\bdeviation"),
        (
            "effective_dates",
            r"\beffective\b|\brevision history\b|\bversion history\b|\breview dates?\b"
            r"|\bdates\b",
        ),
    )
)


def classify_section(heading_path: str) -> str:
    """Section type from keywords in a heading path ("A > B"), last heading first.

    Within one heading the keyword that appears first wins ("Scope and exceptions" ->
    scope); a heading without keywords defers to its parent ("Exceptions > Canada").
    """
    for heading in reversed(heading_path.split(" > ")):
        best: tuple[int, str] | None = None
        for name, pattern in _SECTION_RULES:
            m = pattern.search(heading)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), name)
        if best:
            return best[1]
    return "other"


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_KRAMDOWN_ATTRS = re.compile(r"\s*\{[#:.][^}]*\}\s*$")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])")
_MD_STRONG = re.compile(r"(\*\*|__)(.+?)\1")
_MD_EMPHASIS = re.compile(r"(?<!\w)[*_](\S(?:.*?\S)?)[*_](?!\w)")


def _heading_text(raw: str) -> str:
    text = _KRAMDOWN_ATTRS.sub("", raw)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = text.replace("`", "")
    text = _MD_STRONG.sub(r"\2", text)
    text = _MD_EMPHASIS.sub(r"\1", text)
    return " ".join(text.split())




@dataclass
class Block:
    kind: str  # "prose" | "list" | "table" | "code"
    lines: list[str]


@dataclass
class Section:
    headings: list[tuple[int, str]]  # the heading trail (level, text), outermost first
    blocks: list[Block] = field(default_factory=list)


def _block_kind(lines: list[str]) -> str:
    if any(LIST_ITEM.match(line) for line in lines):
        return "list"
    if any(line.lstrip().startswith("|") for line in lines) or (
        all("|" in line for line in lines) and any(_TABLE_DELIMITER.match(ln) for ln in lines)
    ):
        return "table"  # rows keep their lines (also when a lead-in line precedes them)
    return "prose"


def _add_block(section: Section, lines: list[str]) -> None:
    """Append a blank-line-delimited block, folding loose list items into their list."""
    kind = _block_kind(lines)
    prev = section.blocks[-1] if section.blocks else None
    if (
        prev is not None
        and prev.kind == "list"
        and kind in ("list", "prose")
        and (LIST_ITEM.match(lines[0]) or lines[0][:1] in (" ", "\t"))
    ):
        prev.lines.extend(lines)
        return
    section.blocks.append(Block(kind, lines))


def parse_sections(markdown: str) -> list[Section]:
    sections = [Section(headings=[])]
    trail: list[tuple[int, str]] = []
    current: list[str] = []
    fence: str | None = None  # the opening fence while inside a fenced code block

    def flush() -> None:
        if current:
            _add_block(sections[-1], list(current))
            current.clear()

    for line in markdown.split("\n"):
        if fence is not None:
            current.append(line)
            stripped = line.strip()
            if (
                stripped[:1] == fence[0]
                and set(stripped) == {fence[0]}
                and len(stripped) >= len(fence)
                and len(line) - len(line.lstrip(" ")) <= 3
            ):
                sections[-1].blocks.append(Block("code", list(current)))
                current.clear()
                fence = None
            continue
        opening = _FENCE_OPEN.match(line)
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            flush()
            fence = opening.group(1)
            current.append(line)
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            while trail and trail[-1][0] >= level:
                trail.pop()
            trail.append((level, _heading_text(heading.group(2) or "")))
            sections.append(Section(headings=list(trail)))
            continue
        if not line.strip():
            flush()
            continue
        if _THEMATIC_BREAK.match(line):
            flush()
            continue
        current.append(line)
    if fence is not None and current:  # unclosed fence runs to the end of the document
        sections[-1].blocks.append(Block("code", list(current)))
        current.clear()
    flush()
    return sections


def section_path(headings: list[tuple[int, str]], drop_h1: Callable[[str], bool]) -> str:
    return " > ".join(
        text for level, text in headings if text and not (level == 1 and drop_h1(text))
    )

