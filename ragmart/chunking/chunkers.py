"""Versioned Markdown chunker: cleaned policy pages -> stable, section-aware chunks.

The chunk text is part of the lineage contract (its sha256 is the chunk's identity and
decides what gets re-embedded), so any change to the output must bump CHUNKER_VERSION.

Boundary rule (stable under local edits). Within a section the blocks (paragraphs, list
runs, tables, code fences) are turned into units: a block of at most ``max_words`` words is
one unit; a longer block is cut into ``is_split_paragraph`` pieces on sentence (or list
item / table row) boundaries, and a single over-long sentence on words. Every unit is a
chunk, except that a *short* unit (fewer than ``min_words`` words, not a piece) is
prepended to the next unit when

* the next unit is not a piece,
* the next unit is normal-sized, or short but last in its section (a unit that may join
  its own successor never takes a predecessor, so a chunk holds at most two units), and
* the pair fits in ``max_words``.

Whether a unit joins its successor depends only on those two units and on whether the
successor is last, and no unit can both join its successor and take its predecessor, so
editing one paragraph (keeping it within ``max_words``) changes at most two chunks, and
inserting or deleting one changes at most three. Chunks never cross section boundaries
and never exceed ``max_words`` body words. Longer runs of short paragraphs cannot be
allowed under a word cap: for a chunk [a b c], growing b until a+b no longer fits forces
three new chunks (a | b | c).
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNKER_VERSION = "md-sections-v1"

SECTION_TYPES = ("definitions", "scope", "exceptions", "effective_dates", "other")


@dataclass(frozen=True)
class Chunk:
    chunk_index: int  # 0-based position in the document
    section: str  # heading path, e.g. "Leave types > Sick leave" ("" before any heading)
    section_type: str  # one of SECTION_TYPES
    text: str  # exactly the text sent to the embedding model
    chunk_hash: str  # sha256 hex of `text` (utf-8)
    word_count: int  # whitespace-separated words of the body (title/section prefix excluded)
    section_chunk_index: int  # position of this chunk within its section
    section_chunk_count: int  # chunks in its section (1 = the chunk holds the whole section)
    is_split_paragraph: bool  # True when a single over-long block had to be cut


# =========================================================================== cleaning


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


# =========================================================================== sections

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
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)")
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


def _norm_title(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class _Block:
    kind: str  # "prose" | "list" | "table" | "code"
    lines: list[str]


@dataclass
class _Section:
    headings: list[tuple[int, str]]  # the heading trail (level, text), outermost first
    blocks: list[_Block] = field(default_factory=list)


def _block_kind(lines: list[str]) -> str:
    if any(_LIST_ITEM.match(line) for line in lines):
        return "list"
    if any(line.lstrip().startswith("|") for line in lines) or (
        all("|" in line for line in lines) and any(_TABLE_DELIMITER.match(ln) for ln in lines)
    ):
        return "table"  # rows keep their lines (also when a lead-in line precedes them)
    return "prose"


def _add_block(section: _Section, lines: list[str]) -> None:
    """Append a blank-line-delimited block, folding loose list items into their list."""
    kind = _block_kind(lines)
    prev = section.blocks[-1] if section.blocks else None
    if (
        prev is not None
        and prev.kind == "list"
        and kind in ("list", "prose")
        and (_LIST_ITEM.match(lines[0]) or lines[0][:1] in (" ", "\t"))
    ):
        prev.lines.extend(lines)
        return
    section.blocks.append(_Block(kind, lines))


def _parse_sections(markdown: str) -> list[_Section]:
    sections = [_Section(headings=[])]
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
                sections[-1].blocks.append(_Block("code", list(current)))
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
            sections.append(_Section(headings=list(trail)))
            continue
        if not line.strip():
            flush()
            continue
        if _THEMATIC_BREAK.match(line):
            flush()
            continue
        current.append(line)
    if fence is not None and current:  # unclosed fence runs to the end of the document
        sections[-1].blocks.append(_Block("code", list(current)))
        current.clear()
    flush()
    return sections


def _section_path(headings: list[tuple[int, str]], drop_h1: Callable[[str], bool]) -> str:
    return " > ".join(
        text for level, text in headings if text and not (level == 1 and drop_h1(text))
    )


# =========================================================================== splitting

_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
_ABBREVIATIONS = _names("e.g. i.e. mr. mrs. ms. dr. prof. st. vs. no. art. sec. fig. approx. incl.")


def _starts_sentence(token: str) -> bool:
    head = token.lstrip("\"'\u201c\u2018([*_")
    return bool(head) and (head[0].isupper() or head[0].isdigit())


def _sentences(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    current: list[str] = []
    for i, token in enumerate(tokens):
        current.append(token)
        if (
            i + 1 < len(tokens)
            and _SENTENCE_END.search(token)
            and token.lower() not in _ABBREVIATIONS
            and _starts_sentence(tokens[i + 1])
        ):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def _cut_words(tokens: list[str], max_words: int) -> list[list[str]]:
    """Cut a run of words into the fewest equal-ish pieces of at most ``max_words``."""
    pieces = math.ceil(len(tokens) / max_words)
    size = math.ceil(len(tokens) / pieces)
    return [tokens[i : i + size] for i in range(0, len(tokens), size)]


def _sentence_units(tokens: list[str], max_words: int) -> list[tuple[str, int]]:
    units: list[tuple[str, int]] = []
    for sentence in _sentences(tokens):
        parts = [sentence] if len(sentence) <= max_words else _cut_words(sentence, max_words)
        units.extend((" ".join(part), len(part)) for part in parts)
    return units


def _pack(units: list[tuple[str, int]], max_words: int, sep: str) -> list[str]:
    """Pack units (each <= max_words) into pieces <= max_words aimed at equal sizes."""
    total = sum(n for _, n in units)
    target = total / max(1, math.ceil(total / max_words))
    pieces: list[str] = []
    texts: list[str] = []
    count = 0
    for text, n in units:
        if texts and (count + n > max_words or abs(count + n - target) > abs(count - target)):
            pieces.append(sep.join(texts))
            texts, count = [], 0
        texts.append(text)
        count += n
    if texts:
        pieces.append(sep.join(texts))
    return pieces


def _normalise_line(line: str) -> str:
    expanded = line.expandtabs(4)
    indent = len(expanded) - len(expanded.lstrip(" "))
    return " " * indent + " ".join(expanded.split())


def _block_pieces(block: _Block, max_words: int) -> list[str]:
    """The block's text (whitespace-normalised), cut into pieces of <= max_words."""
    if block.kind == "prose":
        tokens = " ".join(block.lines).split()
        if len(tokens) <= max_words:
            return [" ".join(tokens)]
        return _pack(_sentence_units(tokens, max_words), max_words, " ")

    if block.kind == "code":
        lines = [line.rstrip() for line in block.lines]
    else:
        lines = [_normalise_line(line) for line in block.lines]
        lines = [line for line in lines if line]
    text = "\n".join(lines)
    if len(text.split()) <= max_words:
        return [text]
    # cut between list items / table rows / code lines
    items: list[list[str]] = []
    for line in lines:
        if not items or block.kind != "list" or _LIST_ITEM.match(line):
            items.append([line])
        else:
            items[-1].append(line)  # continuation of the current list item
    units: list[tuple[str, int]] = []
    for item in items:
        item_text = "\n".join(item)
        n = len(item_text.split())
        if n <= max_words:
            units.append((item_text, n))
        else:
            units.extend(_sentence_units(item_text.split(), max_words))
    return _pack(units, max_words, "\n")


# =========================================================================== chunking


@dataclass(frozen=True)
class _Unit:
    text: str
    words: int
    piece: bool  # one of several pieces of an over-long block


def _group_units(units: list[_Unit], max_words: int, min_words: int) -> list[list[_Unit]]:
    def joins_next(i: int) -> bool:
        unit = units[i]
        if unit.piece or unit.words >= min_words or i + 1 >= len(units):
            return False
        nxt = units[i + 1]
        if nxt.piece:
            return False
        if nxt.words < min_words and i + 2 < len(units):
            return False  # the next unit is short and wants to join its own successor
        return unit.words + nxt.words <= max_words

    groups: list[list[_Unit]] = []
    i = 0
    while i < len(units):
        if joins_next(i):
            groups.append([units[i], units[i + 1]])
            i += 2
        else:
            groups.append([units[i]])
            i += 1
    return groups


def chunk_document(
    title: str, content: str, *, max_words: int = 150, min_words: int = 40
) -> list[Chunk]:
    """Cut a Markdown document into section-aware chunks (see the module docstring).

    ``content`` is the raw page (front matter, Liquid and HTML are cleaned here). Each
    chunk's text is ``"{title}\\n{section}\\n\\n{body}"`` (``"{title}\\n\\n{body}"`` outside
    any section), with the title and section prefix left out when empty.
    """
    if not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be a positive integer, got {max_words!r}")
    if not isinstance(min_words, int) or not 0 <= min_words <= max_words:
        raise ValueError(
            f"min_words must be an integer between 0 and max_words ({max_words}), got {min_words!r}"
        )
    _, markdown = clean_markdown(content)
    if not markdown.strip():
        return []

    clean_title = " ".join(title.split())
    sections = _parse_sections(markdown)
    # each section after the first is opened by the last heading of its trail
    h1_count = sum(1 for s in sections if s.headings and s.headings[-1][0] == 1)
    title_key = _norm_title(clean_title)

    def drop_h1(text: str) -> bool:
        return h1_count == 1 or _norm_title(text) == title_key

    chunks: list[Chunk] = []
    for section in sections:
        units: list[_Unit] = []
        for block in section.blocks:
            pieces = [p for p in _block_pieces(block, max_words) if p.strip()]
            units.extend(_Unit(p, len(p.split()), len(pieces) > 1) for p in pieces)
        if not units:
            continue
        path = _section_path(section.headings, drop_h1)
        section_type = classify_section(path)
        header = "\n".join(part for part in (clean_title, path) if part)
        groups = _group_units(units, max_words, min_words)
        for position, group in enumerate(groups):
            body = "\n\n".join(unit.text for unit in group)
            text = f"{header}\n\n{body}" if header else body
            chunks.append(
                Chunk(
                    chunk_index=len(chunks),
                    section=path,
                    section_type=section_type,
                    text=text,
                    chunk_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    word_count=sum(unit.words for unit in group),
                    section_chunk_index=position,
                    section_chunk_count=len(groups),
                    is_split_paragraph=any(unit.piece for unit in group),
                )
            )
    return chunks
