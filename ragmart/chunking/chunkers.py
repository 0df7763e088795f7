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
from dataclasses import dataclass

from ragmart.chunking.markdown import clean_markdown
from ragmart.chunking.sections import classify_section, parse_sections, section_path
from ragmart.chunking.splitting import block_pieces

CHUNKER_VERSION = "md-sections-v1"


@dataclass(frozen=True)
class Chunk:
    chunk_index: int  # 0-based position in the document
    section: str  # heading path, e.g. "Leave types > Sick leave" ("" before any heading)
    section_type: str  # one of ragmart.chunking.sections.SECTION_TYPES
    text: str  # exactly the text sent to the embedding model
    chunk_hash: str  # sha256 hex of `text` (utf-8)
    word_count: int  # whitespace-separated words of the body (title/section prefix excluded)
    section_chunk_index: int  # position of this chunk within its section
    section_chunk_count: int  # chunks in its section (1 = the chunk holds the whole section)
    is_split_paragraph: bool  # True when a single over-long block had to be cut


def _norm_title(text: str) -> str:
    return " ".join(text.split()).casefold()


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
    sections = parse_sections(markdown)
    # each section after the first is opened by the last heading of its trail
    h1_count = sum(1 for s in sections if s.headings and s.headings[-1][0] == 1)
    title_key = _norm_title(clean_title)

    def drop_h1(text: str) -> bool:
        return h1_count == 1 or _norm_title(text) == title_key

    chunks: list[Chunk] = []
    for section in sections:
        units: list[_Unit] = []
        for block in section.blocks:
            pieces = [p for p in block_pieces(block, max_words) if p.strip()]
            units.extend(_Unit(p, len(p.split()), len(pieces) > 1) for p in pieces)
        if not units:
            continue
        path = section_path(section.headings, drop_h1)
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
