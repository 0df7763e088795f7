"""The one place an exception that ends a `ragmart` command becomes one line and an exit code.

`report(command, exc)` prints the line (`ragmart <command>: ...` on stderr) and returns the
code of ragmart.exit_codes.Exit:

* a reader that closed the pipe (`ragmart versions --json | head`): nothing, OK;
* the evaluation gate refusing a candidate: the refusal, GATE_REFUSED;
* an error that says what the user should change (a bad argument, file, id, configuration,
  a database that is missing or locked, see `_input_errors`): its message on one line (a
  DuckDB error opening a file is reworded to name the path and the fix), USAGE;
* anything else is a defect: its type and message, INTERNAL.

The modules that define the error types are imported only when a command failed: a command
that succeeds never pays for them.
"""

from __future__ import annotations

import os
import re
import sys

from ragmart.exit_codes import Exit


class UsageError(ValueError):
    """A bad argument, file or database, said in one line with the fix (exit code USAGE)."""


def report(command: str, exc: Exception) -> Exit:
    """Say why `command` stopped on `exc` (one line on stderr) and return its exit code."""
    if isinstance(exc, BrokenPipeError):  # the reader stopped reading: not a failure
        _quiet_stdout()
        return Exit.OK
    from ragmart.serving.publish import GateRefused

    if isinstance(exc, GateRefused):
        code, message = Exit.GATE_REFUSED, _one_line(str(exc))
    elif isinstance(exc, _input_errors()):
        code, message = Exit.USAGE, _explain_duckdb(exc) or _one_line(str(exc))
    else:
        code, message = Exit.INTERNAL, (
            f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (a defect in "
            "ragmart: please report it with the command you ran)")
    print(f"ragmart {command}: {message}", file=sys.stderr)
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that say what the user should change: a bad argument, file, id, configuration or
    a database that is missing or locked (exit code USAGE)."""
    import duckdb

    from ragmart.duck import ExtensionUnavailableError
    from ragmart.embedding.providers import EmbeddingError
    from ragmart.quality.freshness import FreshnessError
    from ragmart.retrieval.memory import ReadOnlyRequiredError
    from ragmart.retrieval.results import RetrievalError
    from ragmart.serving.pointer import ServingError

    return (RetrievalError, ServingError, FreshnessError, EmbeddingError, ExtensionUnavailableError,
            ReadOnlyRequiredError, ValueError, OSError, duckdb.IOException)


def _explain_duckdb(exc: BaseException) -> str | None:
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
    return f"cannot open {path}: " + _one_line(text.removeprefix("IO Error: "))


def _quiet_stdout() -> None:
    """The reader of stdout is gone: point stdout at /dev/null so that Python's flush at exit
    does not fail again (the Python docs' recipe for SIGPIPE, signal module)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (in-process callers): nothing to silence
        pass
