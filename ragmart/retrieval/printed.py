"""The values a result prints of the rows kept in memory (ragmart.retrieval.memory), as Python
objects, for the few rows a search returns.

`pa.Table.take` and `to_pylist` cost ~10 us a column per search (21 columns) and pyarrow makes
a datetime in ~3 us. Most columns repeat a few values (the document's: id, version, title; the
build's: model, invocation ids, created_at): those are kept as their distinct values, already
Python objects, and one code per row (`Printed`); only the others (chunk_id, chunk_text, the
allowed groups: a list, which is mutable and so never shared between results) are taken from
Arrow per search.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# a column is coded when it has at most this share of distinct values
CODED_SHARE = 0.25


def python_values(column: pa.ChunkedArray | pa.Array) -> list:
    """`column.to_pylist()`; timestamps (us, naive) converted by numpy, ~20x faster."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.tz is None and kind.unit == "us":
        return column.to_numpy(zero_copy_only=False).astype(object).tolist()
    return column.to_pylist()


class Printed:
    """The columns of `records`, per row position, as Python values."""

    def __init__(self, records: pa.Table) -> None:
        self.names = records.column_names
        self.coded: dict[str, tuple[list, np.ndarray]] = {}
        for name, column in zip(records.column_names, records.columns, strict=True):
            coded = _coded(column.combine_chunks())
            if coded is not None:
                self.coded[name] = coded
        self.taken = records.select([n for n in self.names if n not in self.coded])

    def rows(self, positions: list[int]) -> list[dict]:
        """The values of the rows at `positions`, in that order: one dict per row."""
        at = np.asarray(positions, dtype=np.int64)
        taken = self.taken.take(pa.array(at, pa.int64())) if self.taken.num_columns else None
        columns = []
        for name in self.names:
            if name in self.coded:
                values, codes = self.coded[name]
                columns.append([values[c] for c in codes[at].tolist()])
            else:
                assert taken is not None
                columns.append(python_values(taken.column(name)))
        return [dict(zip(self.names, row, strict=True)) for row in zip(*columns, strict=True)]


def _coded(column: pa.Array) -> tuple[list, np.ndarray] | None:
    """(distinct values as Python objects, None last when there is a null; each row's index
    into them), or None for a column of many distinct values or of a type that cannot be
    dictionary-encoded or whose values are mutable (lists)."""
    if pa.types.is_nested(column.type):
        return None
    try:
        encoded = column.dictionary_encode()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return None
    values = python_values(encoded.dictionary)
    if len(values) > CODED_SHARE * max(len(column), 1):
        return None
    codes = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
    return [*values, None], codes.astype(np.int32)
