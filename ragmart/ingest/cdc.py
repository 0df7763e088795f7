"""One landing file read into records, and records taken out of a file: the readers shared by
ingestion (:mod:`ragmart.ingest.landing`) and the compliance purge (:mod:`ragmart.serving.purge`).

A path relative to the landing dir names its producer by its top folder and its format by its
extension (``LAYOUT_EXTENSIONS``): ``dms/`` (:mod:`ragmart.ingest.dms`: CSV and parquet) and
``debezium/`` (:mod:`ragmart.ingest.debezium`: JSON lines or a JSON array). Any other path is one
``unsupported_file`` quarantine row. Reading never raises on file content: every record becomes
exactly one row (:mod:`ragmart.ingest.records`).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from ragmart.ingest import debezium, dms
from ragmart.ingest.records import DEFAULT_MAX_CLOCK_SKEW, FileContext, LandingRecord

LAYOUT_EXTENSIONS = {"dms": (".csv", ".parquet"), "debezium": (".jsonl", ".json")}


def parse_landing_file(
    relative_path: str,
    data: bytes,
    *,
    max_content_bytes: int = 1_000_000,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> list[dict]:
    """Parse one landed file into event rows (dicts keyed by ``ROW_SCHEMA.names``).

    ``relative_path`` is the path under the landing dir (``dms/0001_x.csv``); its top folder
    picks the layout and its extension the format. Content problems never raise: they become
    quarantined rows. Timestamps after ``now`` (naive UTC, default the current time) plus
    ``max_clock_skew``, or before 1970, are quarantined as ``timestamp_out_of_window``.
    """
    return [record.row for record in landing_records(
        relative_path, data, max_content_bytes=max_content_bytes, now=now,
        max_clock_skew=max_clock_skew)]


def landing_records(
    relative_path: str,
    data: bytes,
    *,
    max_content_bytes: int = 1_000_000,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW,
) -> list[LandingRecord]:
    """:func:`parse_landing_file`'s rows with their records' places (see
    :func:`without_records`, which removes records from a file: the compliance purge)."""
    path = relative_path.replace("\\", "/").lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    parts = path.split("/")
    layout = parts[0] if len(parts) > 1 and parts[0] in LAYOUT_EXTENSIONS else None
    ctx = FileContext(
        source_file=relative_path,
        source_layout=layout,
        file_sha256=hashlib.sha256(data).hexdigest(),
        max_content_bytes=max_content_bytes,
        now=now or dt.datetime.now(dt.UTC).replace(tzinfo=None),
        max_clock_skew=max_clock_skew,
    )
    name = parts[-1].lower()
    ext = name[name.rfind(".") :] if "." in name else ""
    if layout is None:
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} is not under dms/ or debezium/ (move it into the folder of "
                "the producer that wrote it)",
            )
        ]
    if len(parts) > 2:
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} is in a subfolder of {layout}/, which ingestion does not "
                f"read (move it into {layout}/ itself)",
            )
        ]
    if ext not in LAYOUT_EXTENSIONS[layout]:
        allowed = ", ".join(LAYOUT_EXTENSIONS[layout])
        return [
            ctx.file_record(
                "unsupported_file",
                f"{relative_path!r} has extension {ext or '(none)'!r}; {layout}/ accepts {allowed}",
            )
        ]
    if ext == ".csv":
        return dms.read_csv(ctx, data)
    if ext == ".parquet":
        return dms.read_parquet(ctx, data)
    return debezium.read(ctx, data, whole_file_json=ext == ".json")


def without_records(relative_path: str, data: bytes, drop: list[LandingRecord]) -> bytes:
    """The file's bytes minus the records ``drop`` (from :func:`landing_records` of the same
    bytes), every other byte kept: a CSV keeps its header, byte-order mark and line endings, a
    JSON array stays an array (the kept elements joined by its first separator); a parquet file
    is written anew with the remaining rows and the same schema. Records named by file-level
    problems (no span) cannot be removed one by one and are ignored."""
    spans = sorted({record.span for record in drop if record.span is not None})
    if not spans:
        return data
    name = relative_path.lower()
    if name.endswith(".parquet"):
        return dms.without_parquet_rows(data, spans)
    if name.endswith(".json"):
        array = debezium.without_array_elements(data, spans)
        if array is not None:
            return array
    out = bytearray()
    position = 0
    for start, end in spans:  # records do not overlap: CSV records and JSON lines
        out += data[position:start]
        position = end
    out += data[position:]
    return bytes(out)
