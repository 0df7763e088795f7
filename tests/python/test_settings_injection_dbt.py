"""Nothing is injected: a setting that reaches SQL is quoted, or refused before anything runs.

Real `dbt build`s. Landing paths with quotes, spaces, braces, `$`, `%`, non-ASCII and a
component starting with `-` are built end to end by tests/python/test_settings_dbt.py (both of
its builds use such paths); here: the values that must be refused, and the one path character
that used to read another directory without a word (`{name}`, which dbt-duckdb's format_map
replaced with the source's name).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cdc_files import dms_csv
from test_settings_dbt import AwkwardProject

from ragmart.duck import connect


def tables(project: AwkwardProject) -> list[str]:
    if not project.db_path.exists():
        return []
    conn = connect(project.db_path, read_only=True)
    try:
        return [r[0] for r in conn.execute(
            "select table_name from information_schema.tables "
            "where table_catalog = current_database()").fetchall()]
    finally:
        conn.close()


def land_one(project: AwkwardProject, document_id: str = "alpha") -> None:
    project.land("dms/0001.csv", dms_csv([
        {"op": "I", "seq": 1, "document_id": document_id,
         "content": f"# {document_id}\n\nSome text about {document_id}.\n"}]))


BAD = {
    "index_version": "v1 ; drop table dim_documents; --",
    "chunker_version": "md-sections-v1'; drop table int_chunks; --",
    "embedding_model": "hash-384-v1' or '1'='1",
    "eval_baseline_relation": "published_eval_metrics; drop table x",
    "max_content_bytes": "1e9",
    "embedding_lag_sla_minutes": "1 or true",
    "vector_delta_max_rows": "5000); drop table x; --",
    "source_freshness_warn_after_hours": -1,
}


def test_every_bad_setting_is_named_in_one_error_and_nothing_runs(tmp_path: Path) -> None:
    project = AwkwardProject(tmp_path, "landing")
    land_one(project)
    glob_dir = tmp_path / "landing[1]"
    proc = project.build(
        "--vars", json.dumps({**BAD, "landing_dir": str(glob_dir)}), check=False)
    assert proc.returncode != 0
    error = next((line for line in proc.stdout.splitlines() if "invalid settings" in line), "")
    for name, value in BAD.items():
        assert f"{name}" in error and str(value) in error, (name, proc.stdout[-3000:])
    assert f"landing_dir (RAGMART_LANDING_DIR) '{glob_dir}' contains one of [ ] * ?" in error
    assert f"index_version '{BAD['index_version']}' is not valid: write v followed by digits" \
        in error
    assert tables(project) == []


# a quote is also in the paths test_settings_dbt.py builds end to end: that variant is slow-only
@pytest.mark.parametrize("name", [pytest.param("it's", marks=pytest.mark.slow), "{name}"])
def test_a_landing_dir_is_read_as_written(tmp_path: Path, name: str) -> None:
    # a decoy where the old formatting would have looked ({name} -> the source's name)
    decoy = AwkwardProject(tmp_path, "dms_files")
    land_one(decoy, "decoy")
    project = AwkwardProject(tmp_path, name)
    land_one(project, "right")
    project.dbt("run", "-s", "stg_landing__document_events")
    assert project.query("select distinct document_id from stg_landing__document_events") == \
        [("right",)]


def test_the_index_version_rule_is_one_rule_for_dbt_and_python() -> None:
    from ragmart.relations import INDEX_VERSION

    macro = (Path(__file__).resolve().parents[2] / "macros" / "validate_settings.sql").read_text()
    dbt_rule = re.search(r"'index_version', var\('index_version'\),\s*'([^']+)'", macro)
    assert dbt_rule and dbt_rule.group(1) == INDEX_VERSION.pattern


@pytest.mark.parametrize("version", ["v1\n", "v\u0661", "v1;x", "V1", "1"])
def test_retrieve_refuses_an_index_version_outside_the_rule(tmp_path: Path, version: str) -> None:
    import duckdb

    from ragmart.retrieval.api import retrieve
    from ragmart.retrieval.results import RetrievalError

    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(RetrievalError, match="invalid index version"):
        retrieve("question", db_path=db, index_version=version)
