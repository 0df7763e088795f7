"""A block cut into pieces of at most ``max_words`` words, on the most natural boundaries.

Prose is cut between sentences, lists between items, tables between rows, code between lines;
a single sentence (or item) longer than ``max_words`` is cut on words into the fewest
equal-ish pieces. Pieces are packed to about equal sizes, so a small edit moves few boundaries.
"""

from __future__ import annotations

import math
import re

from ragmart.chunking.sections import LIST_ITEM, Block

_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
_ABBREVIATIONS = frozenset(
    "e.g. i.e. mr. mrs. ms. dr. prof. st. vs. no. art. sec. fig. approx. incl.".split()
)


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


def block_pieces(block: Block, max_words: int) -> list[str]:
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
        if not items or block.kind != "list" or LIST_ITEM.match(line):
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

