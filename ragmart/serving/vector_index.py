"""The HNSW index DDL, written once, for dbt and for Python.

dbt builds each version's HNSW index (the post-hook create_vector_index of
fct_chunk_vector_index_<v>); ragmart.serving.purge drops and re-creates every HNSW index around
a delete (an index must never live through one: vss defect), and after rewriting a file (COPY
FROM DATABASE keeps the index but not its metric). Both must write the same index, or a purged
snapshot would serve through an index of another metric, which DuckDB then does not use for
retrieval's ranking. So the statement is rendered here only: Python calls
`create_index_sql`, and the dbt-duckdb plugin registers it as the DuckDB function
`ragmart_hnsw_index_sql`, which the macro create_vector_index calls. A published snapshot never
gets an index from Python otherwise: a whole-file snapshot keeps the one dbt built, and a slim
one has none (ragmart.serving.snapshots).

The metric is cosine because retrieval ranks by `array_cosine_distance`: vss answers an
`order by array_cosine_distance(...) limit k` from the index only when the index's metric is
cosine.
"""

from __future__ import annotations

import duckdb
from duckdb.sqltypes import VARCHAR

FUNCTION = "ragmart_hnsw_index_sql"
METRIC = "cosine"
COLUMN = "embedding"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_index_sql(index_name: str, table: str) -> str:
    """The statement creating the HNSW index `index_name` on `table` (a relation as SQL text,
    quoted or qualified by the caller as it needs: `"fct_chunk_vector_index_v1"`,
    `"ragmart"."main"."fct_chunk_vector_index_v1"`)."""
    return (f"create index {_identifier(index_name)} on {table} "
            f"using hnsw ({COLUMN}) with (metric = '{METRIC}')")


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Make ``ragmart_hnsw_index_sql(index_name varchar, table varchar)`` callable on `conn` and
    its cursors."""
    conn.create_function(FUNCTION, create_index_sql, [VARCHAR, VARCHAR], VARCHAR)
