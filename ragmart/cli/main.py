"""The `ragmart` command: retrieve, freshness, eval, stats, and the serving commands."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ragmart.exit_codes import Exit

# the names earlier versions exported (ragmart.exit_codes.Exit is the table)
EXIT_ERROR = Exit.USAGE
EXIT_ABSTAINED = Exit.ABSTAINED


class UsageError(ValueError):
    """A bad argument, file or database, said in one line with the fix (exit code USAGE)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every other error of the command."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(Exit.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _text(value: str) -> str:
    """An argument that is text (a question, group, type, name): valid UTF-8. A command line
    holding bytes that are not UTF-8 reaches Python as lone surrogates (os.fsdecode), which no
    provider can embed and no output can print. Paths are not checked: any bytes name a file."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(value[exc.start])
        what = f"the byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"U+{char:04X}"
        raise argparse.ArgumentTypeError(
            f"{value!r} is not valid UTF-8 text ({what} at character {exc.start}); pass the "
            "text in UTF-8") from None
    return value


# the largest count DuckDB takes (a bigint): LIMIT and k beyond it are a conversion error
MAX_COUNT = 2**63 - 1


def _count(value: str) -> int:
    """A positive integer that SQL can carry (1 to MAX_COUNT)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer; write e.g. 10") from None
    if not 1 <= number <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{value!r} is out of range; write an integer from 1 to {MAX_COUNT}")
    return number


def _positive(value: str) -> float:
    """A finite number > 0 (minutes, seconds)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a positive number; write e.g. 30 or 2.5")
    return number


def _database(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
    """The database file a command opens: --db, else $RAGMART_DB; a UsageError naming the path
    and the fix unless it is a DuckDB file (or, for a build that may create it, could be)."""
    from ragmart.config import Settings

    given = getattr(args, "db", None)
    path = Path(given) if given else Settings.from_env().db_path
    source = "--db" if given else "RAGMART_DB"
    fix = "pass the database file `dbt build` writes with --db FILE (or set RAGMART_DB)"
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # a name of bytes that are not UTF-8 (os.fsdecode)
        raise UsageError(f"{source} {path!r} is not a UTF-8 path and DuckDB opens UTF-8 paths "
                         "only; rename the file (or link it) under a UTF-8 name") from None
    if path.is_dir():
        raise UsageError(f"{source} {path} is a directory, not a database file; {fix}")
    if not path.exists():
        if not must_exist:
            if not path.parent.is_dir():
                raise UsageError(f"{source} {path}: the directory {path.parent} does not "
                                 "exist; create it or pass another path with --db FILE")
            return path
        raise UsageError(f"database {path} does not exist; run `dbt build` first, or {fix}")
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
    except OSError as exc:
        raise UsageError(f"{source} {path} cannot be read ({exc.strerror}); {fix}") from None
    if header[8:12] != b"DUCK":  # every DuckDB file carries its magic bytes there
        raise UsageError(f"{source} {path} is not a DuckDB database file; {fix}")
    return path


def _explain(exc: BaseException) -> str | None:
    """One line for a DuckDB error that reached the command while opening a file (a lock held
    by another process, a file that is not a database), naming the path and the fix."""
    import duckdb

    if not isinstance(exc, duckdb.IOException):
        return None
    text = str(exc)
    found = re.search(r'(?:file|database) "(.*?)"', text)
    path = found.group(1) if found else "the database"
    if "lock" in text.lower():
        pid = re.search(r"\(PID (\d+)\)", text)
        holder = f"another process (PID {pid.group(1)})" if pid else "another process"
        return (f"{path} is locked by {holder}, a `dbt build` or `ragmart build` writing it; "
                "retry when it has finished (readers of a published snapshot never wait: "
                "`ragmart publish v1`)")
    if "not a valid DuckDB database" in text:
        return (f"{path} is not a DuckDB database file; pass the database file `dbt build` "
                "writes with --db FILE (or set RAGMART_DB)")
    if "Is a directory" in text:
        return (f"{path} is a directory, not a database file; pass the database file with "
                "--db FILE (or set RAGMART_DB)")
    if "does not exist" in text:
        return (f"database {path} does not exist; run `dbt build` first, or pass the "
                "database file with --db FILE (or set RAGMART_DB)")
    return f"cannot open {path}: " + " ".join(text.removeprefix("IO Error: ").split())


def _parse_as_of(value: str | None):
    """--as-of: an ISO date or timestamp; with a zone it is converted to UTC (naive UTC, the
    project's timestamp convention), without one it is read as UTC."""
    import datetime as dt

    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        shown = value if len(value) <= 60 else value[:59] + "…"
        raise ValueError(
            f"--as-of {shown!r} is not an ISO date or timestamp; write e.g. 2026-11-02 or "
            "2026-11-02T09:30:00 (UTC) or 2026-11-02T10:30:00+01:00"
        ) from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last instant in UTC
            raise ValueError(
                f"--as-of {value!r} is out of range once converted to UTC; write a time from "
                "0001-01-01 to 9999-12-31 UTC") from None
    return parsed


def _groups(values: list[str] | None) -> list[str] | None:
    """--groups hr,managers --groups finance -> ['hr', 'managers', 'finance']."""
    if values is None:
        return None
    return [g.strip() for value in values for g in value.split(",") if g.strip()]


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from ragmart.exit_codes import Exit
    from ragmart.retrieval.engine import ALL_GROUPS, retrieve

    result = retrieve(
        args.question,
        k=args.k,
        doc_types=args.doc_type or None,
        contract=args.contract,
        groups=ALL_GROUPS if args.all_groups else _groups(args.groups),
        as_of=_parse_as_of(args.as_of),
        db_path=_database(args) if args.db else None,
        contracts_path=args.contracts,
    )
    state = None
    if args.db is None:  # what serves; --db names a file to read as it is
        from ragmart.config import Settings
        from ragmart.serving.lag import serving_state

        state = serving_state(Settings.from_env().db_path)
    if args.json:
        print(json.dumps({"question": args.question, **result.to_dict(),
                          "serving_behind_build": state.serving_behind_build if state else False,
                          "serving": state.to_dict() if state else None}, indent=2,
                         ensure_ascii=False))
        return Exit.ABSTAINED if result.abstained else Exit.OK
    if state is not None and state.warning():
        print(f"ragmart retrieve: warning: {state.warning()}", file=sys.stderr)
    if result.abstained:
        print(f"abstained: {result.reason}")
        for clause in result.clauses:
            print(f"  {clause.clause:<24} excludes {clause.excluded:>6}, leaves {clause.remaining}")
        return Exit.ABSTAINED
    for r in result:
        print(f"{r.rank}. [{r.distance:.4f}] {r.title} — {r.section or '(top)'}")
        print(f"   {r.document_id} v{r.document_version} · {r.chunk_id} · {r.section_type}")
        body = r.chunk_text.split("\n\n", 1)[-1].replace("\n", " ")
        print(f"   {body[:300]}{'…' if len(body) > 300 else ''}")
    return 0


def _cmd_freshness(args: argparse.Namespace) -> int:
    import dataclasses

    import duckdb

    from ragmart.config import Settings
    from ragmart.quality.freshness import freshness, render
    from ragmart.serving.lag import render as render_serving
    from ragmart.serving.lag import serving_lag, serving_state
    from ragmart.serving.publish import auto_publish_status

    settings = Settings.from_env()
    db = _database(args)
    try:
        result = freshness(db, index_version=args.index_version, sla_minutes=args.sla_minutes)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        result = None  # a build holds the build database: its own facts are unknown for now
    state = serving_state(db)
    lag = serving_lag(db, settings.landing_dir, sla_seconds=args.serving_sla_seconds)
    attempt = auto_publish_status(db)
    if args.json:
        print(json.dumps({
            **(result.to_dict() if result else {"database": str(db), "healthy": None}),
            "serving": {
                **(state.to_dict() if state else {"published": False}),
                "auto_publish": dataclasses.asdict(attempt) if attempt else None,
                "serving_lag": lag.to_dict(),
            },
        }, indent=2, default=str, ensure_ascii=False))
    else:
        print(render(result) if result else
              f"freshness of {db}: unknown (a build holds the database; retry when it ends)")
        print(render_serving(state, lag, db))
    if lag.over_sla:
        return Exit.CHECK_FAILED
    return Exit.CHECK_FAILED if args.check and result and not result.healthy else Exit.OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from ragmart.quality.evaluation import (
        default_version,
        effective_tolerance,
        evaluate_version,
        gate,
        load_judged_queries,
        open_version,
        parse_tolerances,
    )
    from ragmart.quality.report import write_report

    queries = load_judged_queries(args.queries)
    tolerance = effective_tolerance(parse_tolerances(args.tolerance or []), args.k)
    # without --db, each version is read where it lives (its published snapshot when serving)
    db = _database(args) if args.db else None
    versions = list(args.compare or [args.version or default_version(db)])
    reports = []
    for version in versions:
        conn = open_version(version, db)
        try:
            reports.append(evaluate_version(conn, version, queries, k=args.k))
        finally:
            conn.close()
    result = gate(reports[1], reports[0], tolerance) if args.compare else None
    markdown, plot = write_report(reports, args.out, result,
                                  tolerance=tolerance if result else None)
    if args.json:
        print(json.dumps({
            "reports": [r.to_dict(per_query=True) for r in reports],
            "gate": None if result is None else {
                "baseline": versions[0], "candidate": versions[1], "passed": result.passed,
                "failures": result.failures, "tolerance": tolerance,
            },
            "markdown": str(markdown),
            "plot": str(plot),
        }, indent=2, ensure_ascii=False))
    else:
        for r in reports:
            print(f"{r.version} ({r.embedding_model}, {r.queries} questions): "
                  + "  ".join(f"{name} {value:.4f}" for name, value in r.metrics().items()))
            for name, m in r.by_document_type.items():
                print(f"  {name} ({m.queries}): recall@{r.k} {m.recall_at_k:.4f}  "
                      f"mrr {m.mrr:.4f}  ndcg@10 {m.ndcg_at_10:.4f}")
        if result is not None:
            print(f"gate (baseline {versions[0]}, candidate {versions[1]}): "
                  + ("passed" if result.passed else "FAILED"))
            for failure in result.failures:
                print(f"  - {failure}")
        print(f"report: {markdown}\nplot: {plot}")
    # the gate's verdict is the exit code (--fail-on-regression, once needed for it, is a no-op)
    return Exit.GATE_REFUSED if result is not None and not result.passed else Exit.OK


def _cmd_stats(args: argparse.Namespace) -> int:
    from ragmart.duck import connect
    from ragmart.embedding.runs import RUNS_TABLE, recent_runs

    db = _database(args)
    conn = connect(db, read_only=True)
    try:
        if not conn.execute("select count(*) from information_schema.tables where "
                            "table_name = $t and table_catalog = current_database()",
                            {"t": RUNS_TABLE}).fetchone()[0]:
            raise UsageError(f"{db} has no {RUNS_TABLE} table: no build has run on it; run "
                             "`dbt build` first, or pass the database it built with --db FILE")
        data = recent_runs(conn, args.last)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for run in data:
        # retries, estimated_cost_usd and error are null on runs recorded before they existed
        cost = run.get("estimated_cost_usd")
        print(
            f"{run['finished_at']:%Y-%m-%d %H:%M:%S} {run['invocation_id'][:8]} "
            f"{run['embedding_model']}: {run['texts_sent']} texts in "
            f"{run['provider_calls']} calls ({run.get('retries') or 0} retries), "
            f"{run['cache_hits']} cache hits, {run['chunks_in_serving_set']} serving chunks, "
            f"~{run['approx_tokens']} tokens, "
            f"{'cost unknown' if cost is None else f'${cost:.6f}'}, {run['seconds']:.1f}s"
            + (f" FAILED: {run['error'][:200]}" if run.get("error") else "")
        )
    return 0


# the dbt test that is the evaluation gate of a build (tests/dbt/)
GATE_TEST = "assert_candidate_does_not_regress"


def _build_exit(outcome) -> Exit:
    """OK; GATE_REFUSED when the evaluation gate is the only node that failed (the build is
    sound, the candidate retrieves worse than what serves) or refused its publish; else
    CHECK_FAILED (a failed node, or a publish that failed)."""
    if outcome is not None and outcome.success and outcome.published is not None:
        return {"published": Exit.OK, "refused": Exit.GATE_REFUSED}.get(
            outcome.published.outcome, Exit.CHECK_FAILED)
    if outcome is None or outcome.success:
        return Exit.OK
    failed = [f.split(":", 1)[0] for f in outcome.failures]
    if failed and all(node.startswith("test.") and node.split(".")[-1] == GATE_TEST
                      for node in failed):
        return Exit.GATE_REFUSED
    return Exit.CHECK_FAILED


PUBLISH_ENV = "RAGMART_BUILD_PUBLISH"  # true: `ragmart build` publishes as with --publish


def _built_version(dbt_args: Sequence[str]) -> str:
    """The index version a build with these dbt arguments builds: --vars index_version, else
    the project's default (v1)."""
    import yaml

    from ragmart.relations import check_version

    for i, arg in enumerate(dbt_args):
        text = dbt_args[i + 1] if arg == "--vars" and i + 1 < len(dbt_args) else (
            arg.removeprefix("--vars=") if arg.startswith("--vars=") else None)
        if text is not None:
            try:
                given = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"--vars {text!r} is not YAML: {exc}") from None
            if isinstance(given, dict) and given.get("index_version"):
                return check_version(str(given["index_version"]))
    return "v1"


def _publish_on_build(flag: bool) -> bool:
    import os

    value = os.environ.get(PUBLISH_ENV, "").strip().lower()
    if value not in ("", "true", "1", "yes", "on", "false", "0", "no", "off"):
        raise ValueError(f"{PUBLISH_ENV}={value!r} is not a boolean; write true or false")
    return flag or value in ("true", "1", "yes", "on")


def _cmd_build(args: argparse.Namespace) -> int:
    from ragmart.build.runner import WarmDbt, then_publish, watch
    from ragmart.config import Settings

    dbt_args = args.dbt_args[1:] if args.dbt_args[:1] == ["--"] else args.dbt_args
    if args.db:  # profiles.yml attaches $RAGMART_DB: dbt reads it in this process
        db = str(_database(args, must_exist=False).resolve())
        previous = os.environ.get("RAGMART_DB")
        os.environ["RAGMART_DB"] = db
        try:
            return _cmd_build(argparse.Namespace(**{**vars(args), "db": None}))
        finally:  # an in-process caller gets its environment back
            if previous is None:
                os.environ.pop("RAGMART_DB", None)
            else:
                os.environ["RAGMART_DB"] = previous
    warm = WarmDbt(dbt_args=dbt_args)
    build = warm.build
    if _publish_on_build(args.publish):
        from ragmart.serving.publish import publish_after_build

        db_path, version = Settings.from_env().db_path, _built_version(dbt_args)
        build = then_publish(build, lambda: publish_after_build(db_path, version))

    def report(n: int, outcome) -> None:
        print(f"ragmart build #{n}: {outcome.summary()}", flush=True)

    if not args.watch:
        outcome = build()
        report(1, outcome)
        return _build_exit(outcome)
    landing = Settings.from_env().landing_dir
    print(f"ragmart build: watching {landing} every {args.interval:g}s (Ctrl-C stops)", flush=True)
    try:
        last = watch(build, landing, interval=args.interval, max_builds=args.max_builds,
                     report=report)
    except KeyboardInterrupt:
        return Exit.OK
    return _build_exit(last)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ragmart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("retrieve", help="top-k chunks for a question (exit 3: abstained)")
    p.add_argument("question", type=_text)
    p.add_argument("-k", type=int, default=5, help="number of chunks (default 5)")
    p.add_argument("--doc-type", action="append", metavar="T", type=_text,
                   help="only chunks of this document type (repeatable)")
    p.add_argument("--contract", metavar="NAME", type=_text,
                   help="apply this retrieval contract (retrieval_contracts.yml)")
    access = p.add_mutually_exclusive_group()
    access.add_argument("--groups", action="append", metavar="G[,G...]", type=_text,
                        help="the caller's groups, checked against each document's "
                             "allowed_groups (repeatable or comma-separated); without it the "
                             "caller is in no group")
    access.add_argument("--all-groups", action="store_true",
                        help="operator switch: see every document whatever its allowed_groups")
    p.add_argument("--as-of", metavar="TIMESTAMP", type=_text,
                   help="answer from the document versions live at this time (ISO, UTC)")
    p.add_argument("--contracts", metavar="FILE",
                   help="contract file (default $RAGMART_CONTRACTS or retrieval_contracts.yml)")
    p.add_argument("--db", help="database file (default $RAGMART_DB)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_retrieve)

    p = sub.add_parser("freshness", help="lag, stale and orphaned embeddings, last change applied")
    p.add_argument("--db", help="database file (default $RAGMART_DB)")
    p.add_argument("--index-version", metavar="vN",
                   help="the version to report (default: the published one, else "
                        "$RAGMART_INDEX_VERSION or v1)")
    p.add_argument("--sla-minutes", type=_positive, metavar="M",
                   help="lag SLA (default $RAGMART_EMBEDDING_LAG_SLA_MINUTES or 1440)")
    p.add_argument("--check", action="store_true",
                   help=f"exit {Exit.CHECK_FAILED} when anything is stale, orphaned or over "
                        "the SLA")
    p.add_argument("--serving-sla-seconds", type=float, metavar="S",
                   help=f"serving lag SLA: exit {Exit.CHECK_FAILED} while a landed change has "
                        "waited longer than this to become visible to readers (default "
                        "$RAGMART_SERVING_SLA_SECONDS; none: report only)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_freshness)

    p = sub.add_parser("eval", help="recall@k, MRR and nDCG@10 of versions on the judged set")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", metavar="vN", type=_text,
                       help="version to evaluate (default: the serving or newest version)")
    which.add_argument("--compare", nargs=2, metavar=("BASELINE", "CANDIDATE"), type=_text,
                       help="evaluate two versions and gate the candidate on the baseline")
    p.add_argument("-k", type=int, default=5, help="recall@k cut-off (default 5)")
    p.add_argument("--out", default="target/eval",
                   help="directory of the Markdown report and plot (default target/eval)")
    p.add_argument("--db", help="database file holding the versions (default $RAGMART_DB)")
    p.add_argument("--queries", metavar="FILE",
                   help="judged queries CSV (default seeds/judged_queries.csv, in the working "
                        "directory or under $DBT_PROJECT_DIR)")
    p.add_argument("--tolerance", action="append", metavar="METRIC=VALUE", type=_text,
                   help="largest allowed drop of a metric for --compare (repeatable; defaults "
                        "recall@5=0.02 mrr=0.03 ndcg@10=0.03)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="accepted for compatibility, no effect: --compare always exits "
                        f"{Exit.GATE_REFUSED} when the candidate fails the gate")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "build", help="dbt build in a warm process; --watch: again whenever files land",
        description="Run the production dbt build (unit tests excluded) with dbt imported and "
                    "the project parsed once per process. With --watch, build now and again "
                    "whenever a file lands in the landing zone: each build costs its nodes, "
                    "not dbt's ~6 s start-up. dbt arguments go after --.")
    p.add_argument("--watch", action="store_true", help="keep building as files land")
    p.add_argument("--interval", type=_positive, default=5.0, metavar="S",
                   help="seconds between looks at the landing zone (default 5)")
    p.add_argument("--max-builds", type=_count, metavar="N", help="stop after N builds")
    p.add_argument("--db", help="database file the build writes (default $RAGMART_DB)")
    p.add_argument("--publish", action="store_true",
                   help=f"after every green build, publish the built version through the "
                        f"evaluation gate (as `ragmart publish`); a refused or failed publish "
                        f"keeps the previous snapshot serving and is retried after the next "
                        f"build (default ${PUBLISH_ENV})")
    p.add_argument("dbt_args", nargs=argparse.REMAINDER,
                   help="arguments passed to dbt build, after --")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("stats", help="what recent builds asked of the embedding provider")
    p.add_argument("--last", type=_count, default=10, metavar="N",
                   help="the N most recent builds (default 10)")
    p.add_argument("--db", help="database file (default $RAGMART_DB)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)
    from ragmart.cli.serving import register as register_serving

    register_serving(sub)
    from ragmart.cli.sql import register as register_sql

    register_sql(sub)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that say what the user should change: a bad argument, file, id, configuration or
    a database that is missing or locked (exit code USAGE)."""
    import duckdb

    from ragmart.duck import VssUnavailableError
    from ragmart.embedding.providers import EmbeddingError
    from ragmart.quality.freshness import FreshnessError
    from ragmart.retrieval.engine import RetrievalError
    from ragmart.retrieval.memory import ReadOnlyRequiredError
    from ragmart.serving.pointer import ServingError

    return (RetrievalError, ServingError, FreshnessError, EmbeddingError, VssUnavailableError,
            ReadOnlyRequiredError, ValueError, OSError, duckdb.IOException)


def _quiet_stdout() -> None:
    """The reader of stdout is gone (`ragmart versions --json | head`): point stdout at
    /dev/null so that Python's flush at exit does not fail again (the Python docs' recipe for
    SIGPIPE, signal module)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (in-process callers): nothing to silence
        pass


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    code = int(func(args))
    sys.stdout.flush()  # a closed pipe fails here, inside the command, not at exit
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code is one of ragmart.exit_codes.Exit (argparse's own usage
    errors exit 2, Exit.USAGE, too). Every failure is one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args.func, args)
    except BrokenPipeError:  # the reader stopped reading: not a failure of the command
        _quiet_stdout()
        return Exit.OK
    except Exception as exc:  # every failure becomes one clear line and an exit code
        from ragmart.serving.publish import GateRefused

        if isinstance(exc, GateRefused):
            print(f"ragmart {args.command}: {exc}", file=sys.stderr)
            return Exit.GATE_REFUSED
        if isinstance(exc, _known_errors()):
            message = _explain(exc) or " ".join(str(exc).split())
            print(f"ragmart {args.command}: {message}", file=sys.stderr)
            return Exit.USAGE
        message = " ".join(str(exc).split())  # one line, whatever the exception wrote
        print(f"ragmart {args.command}: internal error: {type(exc).__name__}: {message} (a "
              "defect in ragmart: please report it with the command you ran)", file=sys.stderr)
        return Exit.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
