"""`ragmart sql | embed`: DuckDB on the serving snapshot, and a question's vector for it."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

from ragmart.exit_codes import Exit


def _session_target(args: argparse.Namespace):
    """What the command reads: the file --db names, as it is; else what serves for
    $RAGMART_DB (the published snapshot, else the build database)."""
    from ragmart.cli.arguments import database as _database
    from ragmart.serving.sql import target_for

    return target_for(_database(args), args.index_version, pinned=bool(args.db))


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _print_table(columns: list[str], rows: list[tuple]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print(line)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")


def _print_rows(args: argparse.Namespace, columns: list[str], rows: list[tuple]) -> None:
    if args.json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2,
                         ensure_ascii=False, default=str))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    else:
        _print_table(columns, rows)


def _run_statement(args: argparse.Namespace, conn) -> int:
    import duckdb

    try:
        cursor = conn.execute(args.command_sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall() if columns else []
    except duckdb.Error as exc:  # the statement's own error: one line, the input to fix
        print(f"ragmart sql: {' '.join(str(exc).split())}", file=sys.stderr)
        return Exit.USAGE
    _print_rows(args, columns, rows)
    return Exit.OK


def _cmd_sql(args: argparse.Namespace) -> int:
    from ragmart.relations import Relations
    from ragmart.serving.sql import open_session, shell_argv

    if (args.json or args.csv) and args.command_sql is None:
        raise ValueError("--json and --csv format the result of -c SQL; pass -c SQL")
    conn, session = open_session(_session_target(args))
    try:
        if args.setup:
            print("\n".join(session.setup_statements()))
            return Exit.OK
        if args.command_sql is not None:
            return _run_statement(args, conn)
        argv = shell_argv(session)
    finally:
        conn.close()
    target = session.target
    kind = "the published snapshot" if target.published else "not a published snapshot"
    macro = Relations(target.version).macro
    print(f"ragmart sql: {target.database} (index version {target.version}, read-only; {kind}); "
          f"search with {macro}(query_vector FLOAT[{session.dimensions}], k, ...), a "
          "question's vector: `ragmart embed \"question\"`", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return Exit.INTERNAL  # not reached: execv replaces the process


def _cmd_embed(args: argparse.Namespace) -> int:
    from ragmart.duck import connect
    from ragmart.serving.sql import (
        check_text,
        embed,
        question_provider,
        session_for,
        vector_literal,
    )

    check_text(args.text)  # before any work
    target = _session_target(args)
    conn = connect(Path(target.database), read_only=True)
    try:
        session = session_for(conn, target)
    finally:
        conn.close()
    vector = embed(question_provider(session), args.text, session.dimensions)
    if args.json:
        print(json.dumps({"index_version": target.version, "embedding_model": session.model,
                          "dimensions": session.dimensions, "vector": vector}))
    else:
        print(vector_literal(vector, session.dimensions))
    return Exit.OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="read this database file as it is (default: what serves for "
                                "$RAGMART_DB: the published snapshot, else the build database)")
    p.add_argument("--index-version", metavar="vN",
                   help="the version to read (default: the published one, else "
                        "$RAGMART_INDEX_VERSION or v1)")


def register(sub: argparse._SubParsersAction) -> None:
    from ragmart.cli.arguments import text as _text

    p = sub.add_parser(
        "sql", help="a read-only DuckDB shell on the serving snapshot (vss, retrieval macro)",
        description="Open the DuckDB shell (duckdb-cli) on what serves, read-only, with vss "
                    "loaded from its wheel and the table macro ragmart_retrieve_<v>; or run "
                    "one statement (-c, with ragmart_embed(text) available); or print the "
                    "statements that set up any DuckDB 1.5.5 client (--setup).")
    what = p.add_mutually_exclusive_group()
    what.add_argument("-c", dest="command_sql", metavar="SQL", type=_text,
                      help="run this statement and print its result")
    what.add_argument("--setup", action="store_true",
                      help="print the statements to paste into a DuckDB 1.5.5 client")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="-c: print the rows as JSON")
    fmt.add_argument("--csv", action="store_true", help="-c: print the rows as CSV")
    _common(p)
    p.set_defaults(func=_cmd_sql)

    p = sub.add_parser("embed", help="a question's vector, by the serving index's model")
    p.add_argument("text", metavar="question", type=_text)
    p.add_argument("--json", action="store_true",
                   help="print JSON (model, dimensions, vector) instead of a SQL literal")
    _common(p)
    p.set_defaults(func=_cmd_embed)
