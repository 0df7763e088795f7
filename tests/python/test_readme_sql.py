"""Every ```sql block of the README runs on the sample database (issue 18), in the connection a
SQL user gets from `ragmart.connect` (vss, the table macro, ragmart_embed), and returns rows; a
block that says it uses the HNSW index really does (its EXPLAIN shows HNSW_INDEX_SCAN)."""

from __future__ import annotations

import re

import duckdb
import pytest
from dbt_harness import ROOT

import ragmart

BLOCK = re.compile(r"^ *```sql\n(.*?)^ *```", re.DOTALL | re.MULTILINE)
INDEX_SCAN = "HNSW_INDEX_SCAN"


def readme_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def claims_index(block: str) -> bool:
    """The README marks a query served by the index with a comment naming HNSW_INDEX_SCAN."""
    return INDEX_SCAN in block


@pytest.fixture(scope="module")
def conn(tmp_path_factory, built_samples) -> duckdb.DuckDBPyConnection:
    project = built_samples.copy(tmp_path_factory.mktemp("readme_sql"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in project.env().items():
            mp.setenv(name, value)
        connection = ragmart.connect(project.db_path)
        yield connection
        connection.close()


def test_the_readme_shows_sql_and_an_index_query() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4
    assert sum(claims_index(b) for b in blocks) >= 1


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: b.strip().splitlines()[0][:40])
def test_readme_sql_block_runs_and_uses_the_index_it_claims(conn, block: str) -> None:
    statements = [s.query for s in conn.extract_statements(block)]
    assert statements
    for statement in statements:
        assert conn.execute(statement).fetchall(), f"no rows: {statement}"
        plan = "".join(row[1] for row in conn.execute("explain " + statement).fetchall())
        if claims_index(block):
            assert INDEX_SCAN in plan, f"the README says the index answers, it does not:\n{plan}"


def test_the_index_claim_is_checked_against_a_query_that_does_not_use_it(conn) -> None:
    """The README's warning: a tie-break sort key makes the same search a full scan (so the
    check above can fail)."""
    vector = "ragmart_embed('can I expense a business class flight')"
    plan = "".join(row[1] for row in conn.execute(
        f"explain select chunk_id from fct_chunk_vector_index_v1 "
        f"order by array_cosine_distance(embedding, {vector}), chunk_id limit 5").fetchall())
    assert INDEX_SCAN not in plan
