"""dbt for tests, each run in a process of its own without paying dbt's start-up each time.

`python -m dbt.cli.main` spends ~2.5 s of CPU before it reads the project: importing dbt, its
adapter, DuckDB, pyarrow. (Measured 2026-11-30: test_pipeline_dbt + test_index_versions, 7 tests and
24 dbt runs, 246 s of CPU with a new process per run and 184 s forked, run side by side.) A fork
server imports them once per pytest process, and forks one child per run. The child is a new process
as a user's `dbt build` is: it gets the run's environment, working directory, arguments and its own
stdout/stderr files, runs dbt's own entry point (what `python -m dbt.cli.main` runs) and exits with
dbt's code after the exit handlers a normal exit runs. Nothing of ragmart is imported before the
fork (the code under test is imported by each run, as in a new process), and the server has one
Python thread, so the fork copies no Python lock held by another thread (the native threads an
import starts, jemalloc's, handle fork). What the children share that new processes would not: the
server's hash seed (one per pytest process, random across runs of the suite).

Run as a script, this module is the server: one JSON request a line on stdin, one JSON reply a
line on stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PRELOAD = ("dbt.cli.main", "dbt.adapters.duckdb", "dbt.adapters.duckdb.plugins", "dbt.task.build",
           "dbt.parser.manifest", "duckdb", "pyarrow", "numpy")


class ForkServer:
    """The client: `run` is `subprocess.run([python, -m, dbt.cli.main, *args], ...)` with
    captured text output."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="ragmart-dbt-fork-"))
        atexit.register(shutil.rmtree, self._dir, True)
        atexit.register(self.close)

    def run(self, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        if os.environ.get("HARNESS_DBT_FORK") == "0" or not self._lock.acquire(blocking=False):
            # a run while another is under way (a test's second thread) is a new process
            return subprocess.run([sys.executable, "-m", "dbt.cli.main", *args], cwd=cwd,
                                  env=env, capture_output=True, text=True)
        try:
            return self._run(args, env, cwd)
        finally:
            self._lock.release()

    def _run(self, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=os.environ | {"DO_NOT_TRACK": "1"}, text=True)
        out, err = self._dir / "stdout", self._dir / "stderr"
        request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out),
                   "stderr": str(err)}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"the dbt fork server ended ({self._proc.wait()})")
        code = json.loads(reply)["returncode"]
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "dbt.cli.main", *args], code,
            out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()


def _child(request: dict) -> None:
    """In the forked child: become the requested dbt run; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m` puts its working directory first
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["dbt", *request["args"]]
        from dbt.cli.main import cli

        try:
            cli()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # what an uncaught exception does to a new process
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # exiting anyway
                stream.flush()
        os._exit(code)


def _serve() -> None:
    import importlib

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever an import prints is not a reply
    for name in PRELOAD:
        importlib.import_module(name)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            _child(request)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        replies.write(json.dumps({"returncode": code}) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
