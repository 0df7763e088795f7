"""No traceback reaches a user: each input that once crashed a `ragmart` command is a known input
error with one line that names the input and the fix, and an exit code of ragmart.exit_codes.

One tiny database is built once for the module; the commands run in-process through
`ragmart.cli.main.main`, except where only a real process shows the failure (a closed pipe, a lock
held by another process)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dbt_harness import ROOT, Project
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ragmart.cli.main import main
from ragmart.exit_codes import Exit

# What a DuckDB or Python failure leaks when it reaches the user unexplained.
LEAKS = ("Traceback", "Binder Error", "Parser Error", "Catalog Error", "Conversion Error",
         "IO Error", "internal error")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("cli"))
    project.land_sample(["0001_initial_load.csv", "0002_initial_snapshot.jsonl"])
    # the tables the commands read; the data and unit tests, which write none, run elsewhere
    project.build("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")
    return project


@pytest.fixture
def env(built, monkeypatch) -> Project:
    for name, value in built.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    return built


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `ragmart argv` in this process."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return int(code), out, err


def one_line_error(err: str, *needles: str) -> str:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    for leak in LEAKS:
        assert leak not in err, err
    assert not DUCKDB_CLASS.search(err), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_a_question_that_is_not_utf8_is_an_input_error(env, capsys) -> None:
    # what Python makes of the bytes b"bad \xff" on a command line (os.fsdecode)
    question = os.fsdecode(b"leave policy \xff")
    code, out, err = run(capsys, "retrieve", question, "--all-groups")
    assert code == Exit.USAGE and out == ""
    one_line_error(err, "question", "UTF-8")
    # the same for every other text argument, named by its option
    code, _, err = run(capsys, "retrieve", "leave", "--groups", os.fsdecode(b"hr\xed\xa0\x80"))
    assert code == Exit.USAGE
    one_line_error(err, "--groups", "UTF-8")


def test_a_database_path_that_is_not_utf8_is_an_input_error(env, capsys, tmp_path) -> None:
    # a file name is any bytes, but DuckDB opens UTF-8 paths only
    db = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.duckdb"))
    shutil.copy(env.db_path, db)
    for command in (["retrieve", "leave", "--all-groups"], ["stats"], ["versions"]):
        code, out, err = run(capsys, *command, "--db", str(db))
        assert code == Exit.USAGE and out == "", err
        one_line_error(err, "--db", "UTF-8", "rename")


def test_a_k_out_of_range_is_an_input_error(env, capsys) -> None:
    code, out, err = run(capsys, "retrieve", "leave", "--all-groups", "-k",
                         "99999999999999999999")
    assert code == Exit.USAGE and out == ""
    one_line_error(err, "99999999999999999999", "at most")
    code, _, err = run(capsys, "stats", "--last", "99999999999999999999")
    assert code == Exit.USAGE
    one_line_error(err, "--last", "99999999999999999999")
    code, _, err = run(capsys, "stats", "--last", "-1")
    assert code == Exit.USAGE
    one_line_error(err, "--last", "-1")
    # the largest k is answered (every chunk)
    code, out, _ = run(capsys, "retrieve", "leave", "--all-groups", "-k", str(2**63 - 1))
    assert code == Exit.OK and out.startswith("1. [")


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_an_as_of_out_of_range_is_an_input_error(env, capsys, as_of) -> None:
    code, out, err = run(capsys, "retrieve", "leave", "--all-groups", "--as-of", as_of)
    assert code == Exit.USAGE and out == ""
    one_line_error(err, "--as-of", as_of)
    # the last representable instant is still a valid question (nothing changed since)
    code, _, err = run(capsys, "retrieve", "leave", "--all-groups", "--as-of",
                       "9999-12-31T23:59:59")
    assert code in (Exit.OK, Exit.ABSTAINED), err


def test_a_contract_file_nested_20000_levels_is_an_input_error(env, capsys, tmp_path) -> None:
    deep = tmp_path / "deep.yml"
    deep.write_text("contracts:\n  deep: " + "[" * 20_000 + "]" * 20_000 + "\n")
    code, out, err = run(capsys, "retrieve", "leave", "--all-groups", "--contracts", str(deep),
                         "--contract", "deep")
    assert code == Exit.USAGE and out == ""
    one_line_error(err, str(deep))


@pytest.mark.parametrize("command", ["stats", "versions", "freshness", "eval"])
@pytest.mark.parametrize("kind", ["missing", "directory", "not duckdb"])
def test_a_database_that_is_missing_or_not_a_database_is_an_input_error(
    env, capsys, tmp_path, command, kind
) -> None:
    db = {"missing": tmp_path / "none.duckdb", "directory": tmp_path,
          "not duckdb": tmp_path / "notes.duckdb"}[kind]
    if kind == "not duckdb":
        db.write_text("not a database\n")
    for argv, environ in (([command, "--db", str(db)], None), ([command], str(db))):
        os.environ["RAGMART_DB"] = environ or str(env.db_path)
        code, out, err = run(capsys, *argv)
        assert code == Exit.USAGE, (argv, err)
        one_line_error(err, str(db), "--db")


def test_every_command_that_opens_a_database_takes_db(env, capsys, tmp_path) -> None:
    db = tmp_path / "ragmart.duckdb"
    shutil.copy(env.db_path, db)
    os.environ["RAGMART_DB"] = str(tmp_path / "elsewhere" / "none.duckdb")
    os.environ.pop("RAGMART_PUBLISH_DIR", None)
    for argv in (["stats"], ["versions"], ["freshness"], ["eval", "--out", str(tmp_path / "e")],
                 ["retrieve", "leave", "--all-groups"]):
        code, out, err = run(capsys, *argv, "--db", str(db))
        assert code == Exit.OK, (argv, err)
    code, out, err = run(capsys, "publish", "v1", "--db", str(db))
    assert code == Exit.OK, err
    assert (tmp_path / "published" / "serving.json").exists()
    # without --db, readers go to what serves: the snapshot, which no build locks
    with holding(db) as pid:
        os.environ["RAGMART_DB"] = str(db)
        for argv in (["eval", "--out", str(tmp_path / "e")], ["retrieve", "leave",
                                                              "--all-groups"]):
            code, out, err = run(capsys, *argv)
            assert code == Exit.OK, (argv, err)
            code, out, err = run(capsys, *argv, "--db", str(db))
            assert code == Exit.USAGE, (argv, err)
            one_line_error(err, str(db), f"PID {pid}", "locked")
    os.environ["RAGMART_DB"] = str(tmp_path / "elsewhere" / "none.duckdb")
    code, _, err = run(capsys, "rollback", "--db", str(db))
    assert code == Exit.USAGE
    one_line_error(err, "no publication before v1")
    code, _, err = run(capsys, "purge", "--flagged", "--db", str(tmp_path / "gone.duckdb"))
    assert code == Exit.USAGE
    one_line_error(err, "gone.duckdb", "--db")
    # build: the database it writes (dbt reads RAGMART_DB when it parses, in this process)
    code, _, err = run(capsys, "build", "--db", str(tmp_path / "no" / "such" / "dir.duckdb"))
    assert code == Exit.USAGE
    one_line_error(err, str(tmp_path / "no" / "such"), "--db")
    written = tmp_path / "built here.duckdb"
    os.environ["DBT_TARGET_PATH"] = str(tmp_path / "target")
    # the models that record an embedding run are enough to show where the build writes
    code, out, err = run(capsys, "build", "--db", str(written), "--", "--quiet", "--select",
                         "+int_chunk_embeddings")
    assert code == Exit.OK, out[-3000:] + err[-3000:]
    assert os.environ["RAGMART_DB"] == str(tmp_path / "elsewhere" / "none.duckdb")  # restored
    code, out, err = run(capsys, "stats", "--db", str(written), "--json")
    assert code == Exit.OK and json.loads(out), err


@contextlib.contextmanager
def holding(db: Path):
    """Another process holds `db` open for writing, as a running build does; yields its PID."""
    hold = ("import sys; from ragmart.duck import connect; c = connect(sys.argv[1]); "
            "print('held', flush=True); sys.stdin.read(); c.close()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def ragmart_process(project: Project, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragmart.cli.main", *args], cwd=ROOT,
                            env=project.env(), stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("argv", [["versions", "--json"],
                                  ["retrieve", "leave", "--all-groups", "-k", "50", "--json"]])
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(built, argv) -> None:
    # `ragmart versions --json | head -c 1`, made deterministic: the reader is gone before the
    # command writes its first byte
    proc = ragmart_process(built, *argv, stdout=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == Exit.OK, err
    assert err == ""
    # and through a real shell pipe
    shell = subprocess.run(
        f"{sys.executable} -m ragmart.cli.main {' '.join(argv)} | head -c 1",
        shell=True, cwd=ROOT, env=built.env(), capture_output=True, text=True, timeout=60)
    assert shell.stdout in ("[", "{") and shell.stderr == ""


def test_a_database_locked_by_a_build_names_the_lock_and_the_retry(built, capsys, monkeypatch,
                                                                   ) -> None:
    with holding(built.db_path) as pid:
        # a real process: retrieve from the unpublished build database
        proc = ragmart_process(built, "retrieve", "leave", "--all-groups",
                               stdout=subprocess.PIPE)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == Exit.USAGE and out == ""
        one_line_error(err, str(built.db_path), "locked", f"PID {pid}", "retry")
        # in-process: every reading command says the same
        for name, value in built.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(ROOT)
        for argv in (["stats"], ["versions"], ["eval", "--out", str(built.workdir / "e")]):
            code, out, err = run(capsys, *argv)
            assert code == Exit.USAGE, (argv, err)
            one_line_error(err, str(built.db_path), "locked", "retry")
        # freshness is a monitor that must answer during builds: the build database's own
        # figures are unknown for now (said, with the retry), what serves is still reported
        code, out, err = run(capsys, "freshness")
        assert code == Exit.OK and "Traceback" not in out + err, err
        assert f"freshness of {built.db_path}: unknown (a build holds the database; retry" in out


def test_help_imports_no_command_and_no_module_twice() -> None:
    # `ragmart retrieve` pays for its own imports only: building the parser imports none of
    # the libraries the commands run on, and `python -m ragmart.cli.main` does not import the
    # module it runs a second time (an import cycle back to main would)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ragmart.cli.main", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "retrieve" in proc.stdout, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    heavy = {name for name in imported
             if name.split(".")[0] in ("duckdb", "numpy", "pyarrow", "dbt", "yaml")}
    assert not heavy, sorted(heavy)
    assert "ragmart.cli.main" not in imported


# ------------------------------------------------------------------ property: any arguments

SQL_ERROR_TEXT = ("Binder Error", "Parser Error", "Catalog Error", "Conversion Error",
                  "Invalid Input Error", "Out of Range Error", "Constraint Error", "IO Error",
                  "Traceback")
# a DuckDB exception's class name (duckdb.CatalogException, _duckdb.BinderException, ...)
DUCKDB_CLASS = re.compile(r"duckdb\.\w*(Exception|Error)")
# strings that mean something to SQL, YAML, shells, JSON paths or format strings
HOSTILE = ["'", "''", "\"", "'; drop table dim_documents; --", "' or 1=1 --", "$1", "$k", "?",
           "%", "_", "%s", "{0}", "{{ var('x') }}", "\\", "\\'", "*", "[]", "{}", "null",
           "NaN", "-", "--", "-k", ",", ",,", " ", "\t", "\n", "é", "文", "🙂", "\u202e",
           "\ufeff", "a" * 5000]
# text as a command line delivers it: any characters but NUL (argv cannot hold one), lone
# surrogates included (bytes that are not UTF-8, through os.fsdecode)
ARGV_TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_characters="\x00"), max_size=40),
    st.sampled_from(HOSTILE),
    st.binary(max_size=12).map(lambda raw: os.fsdecode(raw.replace(b"\x00", b""))),
)
# hostile numbers: the edges where parsers and SQL types end, just past a bigint, negative, text
NUMBERS = st.one_of(
    st.sampled_from(["0", "-1", str(2**63 - 1), str(2**63), "99999999999999999999", "1e3",
                     "5.0", " 5 ", "1_000", "٥", "five", "", "inf", "nan", "-inf", "1e308"]),
    st.integers(2**63 - 2, 2**66).map(str),
    st.integers(-(2**70), 0).map(str),
    ARGV_TEXT,
)
ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
# hostile dates: the first and last days Python has, in any zone (UTC may be past them), bad
# calendars and formats, text
DATES = st.one_of(
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-02-30",
                     "2026-11-02T25:00", "now", "today", "1970-01-01", "9999-12-31",
                     "2026-11-02 09:30:00Z", "+002026-11-02", "", "0001-01-01"]),
    st.datetimes(dt.datetime(9999, 12, 31), timezones=st.none() | ZONES).map(dt.datetime.isoformat),
    st.datetimes(max_value=dt.datetime(1, 1, 1, 23, 59), timezones=st.none() | ZONES)
    .map(dt.datetime.isoformat),
    st.datetimes(timezones=st.none() | ZONES).map(dt.datetime.isoformat),
    ARGV_TEXT,
)


def _paths(root: Path, db: Path) -> list[str]:
    """Database and contract paths a careless user passes: the real ones, missing files, a
    directory, files that are not databases or YAML, names with quotes, spaces, non-ASCII, a
    leading dash and bytes that are not UTF-8."""
    odd = root / "it's a \"db\" ü -x.duckdb"
    shutil.copy(db, odd)
    not_utf8 = Path(os.fsdecode(bytes(root) + b"/\xff.duckdb"))
    shutil.copy(db, not_utf8)
    (root / "notes.txt").write_text("not a database\n")
    (root / "empty").write_bytes(b"")
    (root / "contracts.yml").write_text(
        "version: 1\ncontracts:\n  mine:\n    document_types: [policy]\n")
    (root / "broken.yml").write_text("contracts: [\n  'unclosed\n")
    (root / "latin1.yml").write_bytes("contracts:\n  caf\xe9: {}\n".encode("latin-1"))
    return [str(db), str(odd), str(root), str(root / "missing.duckdb"), str(root / "notes.txt"),
            str(root / "empty"), str(root / "contracts.yml"), str(root / "broken.yml"),
            str(root / "latin1.yml"), str(ROOT / "retrieval_contracts.yml"), "-", "",
            os.fsdecode(b"/tmp/\xff\xfe.duckdb"), "/dev/null", "relative/none.duckdb",
            str(not_utf8)]


def mostly(plausible: st.SearchStrategy[str], hostile: st.SearchStrategy[str]
           ) -> st.SearchStrategy[str]:
    """Plausible three times in four: a command line with one bad piece in many good ones
    reaches deep into the command, one made of bad pieces only stops at the first."""
    return st.integers(0, 3).flatmap(lambda n: plausible if n else hostile)


PLAUSIBLE_DATES = st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2030, 12, 31),
                               timezones=st.none() | ZONES).map(lambda d: d.isoformat())


@st.composite
def cli_arguments(draw: st.DrawFn, paths: list[str], commands: list[str]) -> list[str]:
    """One `ragmart` command line, most of it plausible, any of it hostile."""
    contract_names = ["policy_answers", "current_handbook", "whole_sections", "public_faq",
                      "mine"]
    doc_types = ["policy", "procedure", "handbook", "standard", "guideline"]
    maybe = st.booleans()
    any_path = st.sampled_from(paths) | ARGV_TEXT
    small = st.integers(1, 30).map(str)
    command = draw(st.sampled_from(commands))
    argv = [command]
    if command == "retrieve":
        argv.append(draw(mostly(st.sampled_from(["leave policy", "travel rules", "who approves"]),
                                ARGV_TEXT)))
        if draw(maybe):
            argv += ["-k", draw(mostly(small, NUMBERS))]
        for _ in range(draw(st.integers(0, 2))):
            argv += ["--doc-type", draw(mostly(st.sampled_from(doc_types), ARGV_TEXT))]
        if draw(maybe):
            argv += ["--contract", draw(mostly(st.sampled_from(contract_names), ARGV_TEXT))]
        if draw(maybe):
            argv += ["--contracts", draw(mostly(st.sampled_from([paths[6], paths[9]]),
                                                any_path))]
        access = draw(st.sampled_from(["all", "all", "groups", "none", "both"]))
        if access in ("all", "both"):
            argv.append("--all-groups")
        if access in ("groups", "both"):
            for _ in range(draw(st.integers(1, 2))):
                argv += ["--groups", draw(mostly(
                    st.sampled_from(["hr", "hr,managers", "all-staff", "finance"]), ARGV_TEXT))]
        if draw(maybe):
            argv += ["--as-of", draw(mostly(PLAUSIBLE_DATES, DATES))]
    elif command == "stats":
        if draw(maybe):
            argv += ["--last", draw(mostly(small, NUMBERS))]
    elif command == "freshness":
        if draw(maybe):
            argv += ["--sla-minutes", draw(mostly(st.integers(1, 10**6).map(str), NUMBERS))]
        if draw(maybe):
            argv.append("--check")
    elif command == "eval":
        if draw(maybe):
            argv += ["-k", draw(mostly(small, NUMBERS))]
        if draw(maybe):
            argv += ["--version", draw(mostly(st.sampled_from(["v1", "v2"]), ARGV_TEXT))]
        if draw(maybe):
            argv += ["--tolerance", draw(mostly(st.sampled_from(["mrr=0.5", "recall@5=0"]),
                                                st.sampled_from(["recall@5=x", "x=1", "mrr"])
                                                | ARGV_TEXT))]
        argv += ["--out", str(Path(paths[0]).parent / "eval-out")]
    if draw(maybe):
        argv += ["--db", draw(mostly(st.sampled_from(paths[:2]), any_path))]
    if draw(maybe):
        argv.append("--json")
    return argv


def run_like_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of main(argv), with streams that encode as a UTF-8 terminal
    does: stdout strict (a character it cannot encode is an error), stderr backslashreplace."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace",
                           write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return (int(code), out.buffer.getvalue().decode("utf-8"),
            err.buffer.getvalue().decode("utf-8"))


@pytest.fixture(scope="module")
def cli_paths(built, tmp_path_factory) -> list[str]:
    return _paths(tmp_path_factory.mktemp("paths"), built.db_path)


@pytest.fixture(scope="module")
def cli_env(built):
    with pytest.MonkeyPatch.context() as mp:
        for name, value in built.env().items():
            mp.setenv(name, value)
        mp.delenv("RAGMART_CONTRACTS", raising=False)
        mp.chdir(ROOT)
        yield built


def check_any_arguments(argv: list[str]) -> None:
    code, out, err = run_like_a_terminal(argv)
    event(f"{argv[0]} exit {code}")  # --hypothesis-show-statistics: how deep the examples go
    shown = f"ragmart {argv!r} -> {code}\nstdout: {out[-800:]}\nstderr: {err}"
    assert code in (Exit.OK, Exit.USAGE, Exit.ABSTAINED, Exit.GATE_REFUSED,
                    Exit.CHECK_FAILED), shown  # INTERNAL (1) is a defect
    for text in SQL_ERROR_TEXT:
        assert text not in out and text not in err, shown
    assert not DUCKDB_CLASS.search(out + err), shown
    assert err.count("\n") <= 1, shown
    if code == Exit.USAGE:  # the one line that says what to change
        assert err.startswith("ragmart") and err.endswith("\n"), shown


PROPERTY_SETTINGS = dict(deadline=None, derandomize=False, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])


@settings(max_examples=30, **PROPERTY_SETTINGS)
@given(data=st.data())
def test_any_arguments_end_in_a_table_exit_code_without_traceback_or_sql_error(
    cli_env, cli_paths, data
) -> None:
    check_any_arguments(data.draw(cli_arguments(
        cli_paths, ["retrieve", "retrieve", "retrieve", "stats", "versions", "freshness"])))


@pytest.mark.slow
@settings(max_examples=600, **PROPERTY_SETTINGS)
@given(data=st.data())
def test_any_arguments_many_examples(cli_env, cli_paths, data) -> None:
    check_any_arguments(data.draw(cli_arguments(
        cli_paths, ["retrieve", "retrieve", "retrieve", "stats", "versions", "freshness",
                    "eval"])))
