"""Every `ragmart` command exits with a code of ragmart.exit_codes.Exit, one outcome per code,
documented in one table that the README copies."""

from __future__ import annotations

import re

import duckdb
import pytest
from dbt_harness import ROOT

import ragmart.exit_codes
from ragmart.cli.main import main
from ragmart.exit_codes import Exit


def _table(text: str) -> list[str]:
    """The lines of the exit-code table in `text` (from its header row to its last row)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*code\s*\|", line))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_the_readme_table_is_the_exit_codes_table() -> None:
    table = _table(ragmart.exit_codes.__doc__)
    assert _table((ROOT / "README.md").read_text()) == table
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [(int(code), name) for code, name, _ in rows] == [(e.value, e.name) for e in Exit]


def test_an_unexpected_error_exits_internal_with_one_line_and_no_traceback(
    monkeypatch, capsys, tmp_path
) -> None:
    import ragmart.quality.freshness

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\n  (a second line)")

    monkeypatch.setattr(ragmart.quality.freshness, "freshness", broken)
    db = tmp_path / "x.duckdb"
    duckdb.connect(str(db)).close()  # a database file: the command gets as far as its work
    assert main(["freshness", "--db", str(db)]) == Exit.INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: ZeroDivisionError: division by zero (a second line)" in err
    assert "please report it" in err


def test_usage_and_input_errors_exit_usage(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("RAGMART_DB", str(tmp_path / "ragmart.duckdb"))
    assert main(["publish", "version-two"]) == Exit.USAGE
    assert "invalid index version 'version-two'" in capsys.readouterr().err
    assert main(["publish", "v1"]) == Exit.USAGE  # nothing built yet
    assert "does not exist; run `dbt build` first" in capsys.readouterr().err
    assert main(["eval", "--db", str(tmp_path / "missing.duckdb")]) == Exit.USAGE
    assert "missing.duckdb does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: a missing argument
        main(["publish"])
    assert exc.value.code == Exit.USAGE


def test_a_failed_build_exits_gate_refused_when_only_the_gate_failed_else_check_failed(
    monkeypatch, capsys
) -> None:
    import ragmart.build.runner
    from ragmart.build.runner import BuildOutcome

    gate = "test.ragmart.assert_candidate_does_not_regress: fail: Got 1 result"
    other = "test.ragmart.assert_live_versions_are_served: fail: Got 2 results"
    model = "model.ragmart.fct_chunk_embeddings_v1: error: provider down"
    cases = [
        ([gate], Exit.GATE_REFUSED),
        ([other], Exit.CHECK_FAILED),
        ([gate, other], Exit.CHECK_FAILED),
        ([model], Exit.CHECK_FAILED),
        (["RuntimeError('no dbt project')"], Exit.CHECK_FAILED),
    ]
    outcomes = iter([BuildOutcome(False, 1.0, True, failures=f) for f, _ in cases]
                    + [BuildOutcome(True, 1.0, False)])

    class FakeDbt:
        def __init__(self, dbt_args):
            self.dbt_args = dbt_args

        def build(self) -> BuildOutcome:
            return next(outcomes)

    monkeypatch.setattr(ragmart.build.runner, "WarmDbt", FakeDbt)
    for failures, code in cases:
        assert main(["build"]) == code, failures
        assert "FAILED" in capsys.readouterr().out
    assert main(["build"]) == Exit.OK


def test_every_code_is_distinct_and_stable() -> None:
    assert {e.name: e.value for e in Exit} == {
        "OK": 0, "INTERNAL": 1, "USAGE": 2, "ABSTAINED": 3, "GATE_REFUSED": 4,
        "CHECK_FAILED": 5, "DEGRADED": 6}


def test_judged_queries_are_found_from_any_directory_through_dbt_project_dir(
    monkeypatch, capsys, tmp_path
) -> None:
    from ragmart.quality.judged import load_judged_queries

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DBT_PROJECT_DIR", raising=False)
    assert main(["eval", "--db", str(tmp_path / "x.duckdb")]) == Exit.USAGE
    err = capsys.readouterr().err
    assert "seeds/judged_queries.csv are not in the working directory" in err
    assert "set DBT_PROJECT_DIR" in err
    monkeypatch.setenv("DBT_PROJECT_DIR", str(ROOT))
    assert load_judged_queries() == load_judged_queries(ROOT / "seeds" / "judged_queries.csv")
