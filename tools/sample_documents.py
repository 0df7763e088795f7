"""The sample's documents: Markdown files with front matter read as source rows, and the
one-paragraph edits the sample history makes to them."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ragmart.safe_yaml import YAMLLimitError, load_yaml
from tools.cdc_files import Document

# every document's updated_at as read; the plan spreads the initial load's from here
INITIAL_UPDATED_AT = dt.datetime(2026, 10, 1, 8, 0)
_LIST_ITEM = re.compile(r"\s*([-*+]|\d+[.)])\s")
_FENCE = re.compile(r"\s*(```|~~~)")


def read_document(path: Path) -> Document:
    """One Markdown file with front matter; ``content`` is the body after the front matter."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    how = (
        "start the file with a '---' line, then 'document_id:', 'document_type:', 'title:' "
        "(optional 'allowed_groups: [a, b]'), then a closing '---' line"
    )
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: no front matter; {how}")
    end = text.find("\n---\n", 3)
    if end == -1:
        if text.endswith("\n---"):
            end = len(text) - 4
        else:
            raise ValueError(f"{path}: front matter is not closed; {how}")
    try:
        meta = load_yaml(text[4:end] or "{}", f"{path} (front matter)")
    except YAMLLimitError as exc:
        raise ValueError(f"{exc}; {how}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: front matter must be key: value lines; {how}")
    values = {}
    for key in ("document_id", "document_type", "title"):
        value = meta.get(key)
        if value is None or not str(value).strip():
            raise ValueError(f"{path}: front matter lacks '{key}'; {how}")
        values[key] = str(value).strip()
    extra = {"source_path": path.name}
    for key in sorted(str(k) for k in meta):
        if key not in ("document_id", "document_type", "title", "allowed_groups"):
            extra[key] = _front_matter_text(meta[key])
    return Document(
        document_id=values["document_id"],
        document_type=values["document_type"],
        title=values["title"],
        content=text[end + 5 :].lstrip("\n"),
        updated_at=INITIAL_UPDATED_AT,
        allowed_groups=_groups(meta.get("allowed_groups"), path),
        extra=tuple(sorted(extra.items())),
    )


def read_documents(documents_dir: Path) -> list[Document]:
    """All ``*.md`` documents of a folder, sorted by document_id; duplicates are an error."""
    documents_dir = Path(documents_dir)
    if not documents_dir.is_dir():
        raise ValueError(f"{documents_dir}: not a folder; pass --documents <folder of .md files>")
    by_id: dict[str, tuple[Path, Document]] = {}
    for path in sorted(documents_dir.glob("*.md")):
        doc = read_document(path)
        if doc.document_id in by_id:
            other = by_id[doc.document_id][0].name
            raise ValueError(
                f"{path}: document_id {doc.document_id!r} is also used by {other}; "
                "give each document its own id"
            )
        by_id[doc.document_id] = (path, doc)
    return [by_id[key][1] for key in sorted(by_id)]


def _front_matter_text(value: Any) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def _groups(value: Any, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        sep = ";" if ";" in value else ","
        return tuple(part.strip() for part in value.split(sep) if part.strip())
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return tuple(str(v) for v in value)
    raise ValueError(
        f"{path}: allowed_groups must be a list like [hr, managers] or 'hr; managers', "
        f"got {value!r}"
    )


def _blocks(content: str) -> list[str]:
    return content.split("\n\n")


def _is_prose_line(line: str) -> bool:
    if line.startswith(("    ", "\t")) or _LIST_ITEM.match(line):
        return False  # indented code or a list item
    return not line.lstrip().startswith(("#", "|", ">", "<", "---", "***", "___", "==="))


def _editable_block(content: str, *, middle: bool) -> int:
    """Index of the paragraph to edit: the 3rd prose paragraph (or the middle one)."""
    blocks = _blocks(content)
    prose, fallback = [], []
    in_fence = False
    for index, block in enumerate(blocks):
        lines = block.strip("\n").split("\n")
        fences = sum(1 for line in lines if _FENCE.match(line))
        if not in_fence and fences == 0 and block.strip():
            fallback.append(index)
            if all(_is_prose_line(line) for line in lines) and re.search(r"[A-Za-z]", block):
                prose.append(index)
        if fences % 2:
            in_fence = not in_fence
    candidates = prose or fallback
    if not candidates:
        raise ValueError("document has no paragraph outside code blocks to edit")
    if middle:
        return candidates[len(candidates) // 2]
    return candidates[2] if len(candidates) > 2 else candidates[-1]


def edit_one_paragraph(content: str, sentence: str, *, middle: bool = False) -> str:
    """Append ``sentence`` to one paragraph; every other paragraph stays byte-identical."""
    blocks = _blocks(content)
    index = _editable_block(content, middle=middle)
    block = blocks[index]
    stripped = block.rstrip()
    blocks[index] = stripped + " " + sentence + block[len(stripped) :]
    return "\n\n".join(blocks)
