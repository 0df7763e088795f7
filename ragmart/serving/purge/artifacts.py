"""Step ``artifacts``: the document leaves the dbt logs and reports, recognised by bytes.

Logs, reports and unreadable landing files are not records, so the document is recognised in
them by its id as a whole word (in any of its spellings) or one of its distinctive sentences
(:func:`sentences`), each in UTF-8, UTF-16 and JSON-escaped form (:class:`Needles`). A log or
report read line by line loses the lines carrying the document; any other artifact carrying it
is deleted (dbt writes it anew).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ragmart.ingest.purged import id_pattern, text_forms
from ragmart.serving.purge.deployment import Deployment, write_atomic

# artifacts read line by line: a line carrying the document is removed, the rest kept
LINE_ARTIFACTS = (".log", ".md", ".txt", ".jsonl", ".csv", ".out")
# a sentence shorter than this is not distinctive enough to remove a line of a log for
MIN_SENTENCE = 30
SENTENCE_PREFIX = 60
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(texts: Iterable[str | None]) -> set[str]:
    """Distinctive sentences of the document's texts, as searched for in logs and reports: every
    sentence or line of at least MIN_SENTENCE characters, cut to its first SENTENCE_PREFIX."""
    out = set()
    for text in texts:
        for part in _SENTENCE_END.split(text or ""):
            part = part.strip()
            if len(part) >= MIN_SENTENCE:
                out.add(part[:SENTENCE_PREFIX])
    return out


def _byte_forms(text: str) -> set[bytes]:
    forms = set()
    for form in text_forms(text):
        forms |= {form.encode("utf-8"), form.encode("utf-16-le"), form.encode("utf-16-be")}
    return forms


@dataclass(frozen=True)
class Needles:
    """What marks bytes as carrying the document: its id as a whole word (in any of its
    spellings) or one of its distinctive sentences, in UTF-8, UTF-16 or JSON-escaped form."""

    document_id: str
    sentences: frozenset[str] = frozenset()

    @functools.cached_property
    def _bytes(self) -> tuple[bytes, ...]:
        utf16 = {f for f in _byte_forms(self.document_id) if b"\x00" in f}
        return tuple({f for s in self.sentences for f in _byte_forms(s)} | utf16)

    @functools.cached_property
    def _texts(self) -> tuple[str, ...]:
        return tuple({f for s in self.sentences for f in text_forms(s)})

    def in_bytes(self, data: bytes) -> bool:
        return any(form in data for form in self._bytes) or self.in_text(
            data.decode("utf-8", "replace"))

    def in_text(self, text: str) -> bool:
        return (any(form in text for form in self._texts)
                or id_pattern(self.document_id).search(text) is not None)


def _artifact_files(dep: Deployment) -> list[Path]:
    files: set[Path] = set()
    for folder in dep.artifact_dirs:
        if folder.is_dir():
            files |= {p for p in folder.rglob("*") if p.is_file()}
    return sorted(files)


def artifact_actions(dep: Deployment, needles: Needles) -> dict[str, str]:
    """file -> "remove lines a, b" or "delete", for every artifact carrying the document."""
    actions = {}
    for path in _artifact_files(dep):
        data = path.read_bytes()
        if not needles.in_bytes(data):
            continue
        action = "delete"
        if path.suffix.lower() in LINE_ARTIFACTS:
            try:
                lines = data.decode("utf-8").splitlines(keepends=True)
            except UnicodeDecodeError:
                lines = None
            if lines is not None:
                drop = [i + 1 for i, line in enumerate(lines) if needles.in_text(line)]
                rest = "".join(line for i, line in enumerate(lines) if i + 1 not in drop)
                if drop and not needles.in_bytes(rest.encode()):
                    action = "remove lines " + ", ".join(map(str, drop))
        actions[str(path)] = action
    return actions


def apply_artifact_action(path: Path, action: str) -> None:
    """Carry out one action of :func:`artifact_actions`."""
    if action == "delete":
        path.unlink(missing_ok=True)
        return
    drop = {int(n) for n in action.removeprefix("remove lines ").split(", ")}
    lines = path.read_bytes().decode("utf-8").splitlines(keepends=True)
    write_atomic(path, "".join(line for i, line in enumerate(lines)
                               if i + 1 not in drop).encode())
