"""What every command module shares: the parser class, argument types and the --db check.

Cheap to import (argparse and the standard library only): `ragmart --help` and every command
build the whole parser before running anything.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ragmart.cli.errors import UsageError
from ragmart.exit_codes import Exit


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every other error of the command."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(Exit.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def text(value: str) -> str:
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


def count(value: str) -> int:
    """A positive integer that SQL can carry: 1 to the largest bigint (retrieval's MAX_K)."""
    from ragmart.retrieval.request import MAX_K

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer; write e.g. 10") from None
    if not 1 <= number <= MAX_K:
        raise argparse.ArgumentTypeError(
            f"{value!r} is out of range; write an integer from 1 to {MAX_K}")
    return number


def positive(value: str) -> float:
    """A finite number > 0 (minutes, seconds)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a positive number; write e.g. 30 or 2.5")
    return number


def add_db(parser: argparse.ArgumentParser, what: str = "database file") -> None:
    """The --db option of a command that opens the build database."""
    parser.add_argument("--db", help=f"{what} (default $RAGMART_DB)")


def database(args: argparse.Namespace, *, must_exist: bool = True) -> Path:
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
