"""`dbt build` with dbt kept warm in one process: `ragmart build [--watch]`.

A `dbt build` subprocess pays ~6 s before and around its nodes, whatever the change: importing
dbt (~3 s), loading the manifest (~1.5-2 s), opening the database. A landing zone that receives a
small CDC batch every few minutes pays that for every batch. `WarmDbt` imports dbt once, parses
the project once and hands the manifest to every build (``dbtRunner(manifest=...)``, dbt's
documented way to reuse a parse); it parses again only when a project file changed. A build then
costs its nodes.

After every build it closes dbt-duckdb's database: dbt-duckdb keeps the DuckDB environment in a
class attribute, so the file would otherwise stay attached, and locked, between builds. Closing
checkpoints it and lets `ragmart publish` and readers in.

`watch` builds once, then polls the landing zone and builds again when a file landed or
changed. A failed build is retried with a growing wait, so a provider outage is not hammered.
Environment variables (RAGMART_DB, RAGMART_LANDING_DIR, ...) are read when the project is parsed,
at the first build: the landing dir is part of the parsed manifest, so a new value needs a new
process (a changed project file makes a new parse, a changed variable does not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragmart.ingest.landing import LandingZoneError, list_landing_files
from ragmart.ingest.store import is_s3_url

# What `make run` and the benchmark build with: unit tests check model logic on fixed inputs and
# belong to CI (`make test`), not to every production build (dbt's advice).
PRODUCTION_BUILD_ARGS = ("--exclude-resource-type", "unit_test")

# Files whose change means a new parse (everything dbt reads from the project directory).
PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml", "selectors.yml")
PROJECT_DIRS = ("models", "python_models", "macros", "tests", "seeds", "snapshots", "analyses")

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class BuildOutcome:
    """What one build did: its verdict, where its time went, what failed."""

    success: bool
    seconds: float
    parsed: bool  # this build parsed the project first (first build, or a project file changed)
    model_seconds: float = 0.0  # models and seeds, from dbt's node timings
    test_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    # the publish attempted after this (green) build, a ragmart.serving.publish.AutoPublish
    published: Any = None
    publish_seconds: float = 0.0

    def summary(self) -> str:
        state = "OK" if self.success else "FAILED"
        text = (f"{state} in {self.seconds:.1f}s (models {self.model_seconds:.1f}s, "
                f"data tests {self.test_seconds:.1f}s{', parsed first' if self.parsed else ''})")
        if self.failures:
            text += ": " + "; ".join(self.failures[:5])
        if self.published is not None:
            text += f"; {self.published.summary()} in {self.publish_seconds:.1f}s"
        return text


def split_seconds(timings: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Seconds spent in models (and seeds, snapshots) and in tests (data and unit), from
    (unique_id, execution_time) pairs: dbt's result objects or run_results.json."""
    split = {"models": 0.0, "tests": 0.0}
    for unique_id, seconds in timings:
        split["tests" if unique_id.startswith(("test.", "unit_test.")) else "models"] += seconds
    return split


def failed_nodes(result: Any) -> list[str]:
    """`unique_id: status: message` of every node of a dbt result that neither succeeded,
    passed nor only warned (an exposure is a no-op node of a build: not a failure)."""
    return [
        f"{node.node.unique_id}: {node.status}" + (f": {node.message}" if node.message else "")
        for node in getattr(result, "results", None) or []
        if str(node.status) not in ("success", "pass", "warn", "no-op")
    ]


def close_duckdb() -> None:
    """Close dbt-duckdb's process-wide DuckDB environment (checkpoints and unlocks the file)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager as manager

    with manager._LOCK:
        if manager._ENV is not None:
            manager._ENV.close()
        manager._ENV = None


def _stat_files(paths: Sequence[Path], root: Path) -> Fingerprint:
    entries = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


def project_fingerprint(project_dir: Path) -> Fingerprint:
    """Name, size and modification time of every file dbt reads from the project."""
    files = [project_dir / name for name in PROJECT_FILES]
    for name in PROJECT_DIRS:
        top = project_dir / name
        if top.is_dir():
            files += [p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return _stat_files(files, project_dir)


def landing_fingerprint(landing_dir: Path) -> Fingerprint:
    """Name, size and modification time of the landed files ingestion lists (hidden files,
    which it skips, are left out; a misplaced file counts: the build reports it). A missing
    landing dir has no files: the build it triggers fails naming the path. On S3 the time is
    the object's LastModified (an overwritten object has a new one)."""
    try:
        listed = [f for f in list_landing_files(landing_dir) if not f.is_hidden]
    except LandingZoneError:
        return ()
    if is_s3_url(landing_dir):
        return tuple((f.relative_path, f.size, int(f.modified_at.timestamp() * 1e6))
                     for f in listed)
    return _stat_files([Path(f.path) for f in listed], Path(landing_dir).absolute())


def parse_args(dbt_args: Sequence[str]) -> list[str]:
    """Of the arguments of a `dbt build`, those `dbt parse` takes too (--vars, --target,
    --project-dir, --quiet, ...); selection and build-only options (--select, --full-refresh,
    ...) are the build's alone, and `dbt parse` refuses them. An option's values are the
    arguments up to the next option (`--select a b`)."""
    from dbt.cli.main import cli

    taken = {opt for param in cli.commands["parse"].params
             for opt in (*param.opts, *param.secondary_opts)}
    kept, keep = [], False
    for arg in dbt_args:
        if arg.startswith("-"):
            keep = arg.split("=", 1)[0] in taken
        if keep:
            kept.append(arg)
    return kept


class WarmDbt:
    """dbt imported once and its manifest parsed once, for many builds in this process."""

    def __init__(self, project_dir: Path | None = None, *, dbt_args: Sequence[str] = (),
                 build_args: Sequence[str] = PRODUCTION_BUILD_ARGS) -> None:
        from dbt.cli.main import dbtRunner

        self.project_dir = Path(project_dir or os.environ.get("DBT_PROJECT_DIR") or ".").resolve()
        self.dbt_args = [*dbt_args, "--project-dir", str(self.project_dir)]
        self.build_args = list(build_args)
        self._runner_class = dbtRunner
        self._runner = None
        self._fingerprint: Fingerprint | None = None
        self.parses = 0

    @property
    def target_path(self) -> Path:
        """Where dbt writes its artifacts: --target-path, $DBT_TARGET_PATH or `target`."""
        args = self.dbt_args
        given = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--target-path"),
                     None) or os.environ.get("DBT_TARGET_PATH") or "target"
        return self.project_dir / given  # an absolute path stays as it is

    def _parse_if_changed(self) -> bool:
        fingerprint = project_fingerprint(self.project_dir)
        if self._runner is not None and fingerprint == self._fingerprint:
            return False
        try:
            result = self._runner_class().invoke(["parse", *parse_args(self.dbt_args)])
        finally:
            close_duckdb()
        _reraise_interrupt(result)
        if not result.success:
            raise RuntimeError(f"dbt parse failed: {result.exception!r}")
        self._runner = self._runner_class(manifest=result.result)
        self._fingerprint = fingerprint
        self.parses += 1
        return True

    def build(self, *extra: str) -> BuildOutcome:
        started = time.perf_counter()
        try:
            parsed = self._parse_if_changed()
        except RuntimeError as exc:
            return BuildOutcome(False, time.perf_counter() - started, True, failures=[str(exc)])
        try:
            # no manifest.json after each build (the parse wrote it; writing it again costs
            # ~0.5 s a build); run_results.json is written below
            result = self._runner.invoke(
                ["build", *self.build_args, *extra, *self.dbt_args, "--no-write-json"])
        finally:
            close_duckdb()
        _reraise_interrupt(result)
        if hasattr(result.result, "write"):
            self.target_path.mkdir(parents=True, exist_ok=True)
            result.result.write(str(self.target_path / "run_results.json"))
        split = split_seconds((node.node.unique_id, node.execution_time)
                              for node in getattr(result.result, "results", None) or [])
        failures = failed_nodes(result.result)
        if not result.success and not failures:
            failures.append(repr(result.exception))
        return BuildOutcome(bool(result.success), time.perf_counter() - started, parsed,
                            split["models"], split["tests"], failures)


def _reraise_interrupt(result: Any) -> None:
    """dbtRunner.invoke returns a Ctrl-C (SIGINT) as a failed result: raise it again, so that
    `ragmart build --watch` stops instead of retrying the build it interrupted."""
    if isinstance(getattr(result, "exception", None), KeyboardInterrupt):
        raise KeyboardInterrupt


def then_publish(build: Callable[[], BuildOutcome], publish: Callable[[], Any]
                 ) -> Callable[[], BuildOutcome]:
    """`build`, then `publish()` after every green build (never after a failed one: what
    serves stays as it was); the attempt rides on the outcome (`published`). `publish` must
    not raise for a refused or failed publish (ragmart.serving.publish.publish_after_build), so a
    refusal neither stops the loop nor makes it rebuild: the next build publishes again."""

    def run() -> BuildOutcome:
        outcome = build()
        if outcome.success:
            started = time.perf_counter()
            outcome.published = publish()
            outcome.publish_seconds = time.perf_counter() - started
        return outcome

    return run


def watch(build: Callable[[], BuildOutcome], landing_dir: Path, *, interval: float = 5.0,
          max_builds: int | None = None, max_backoff: float = 300.0,
          sleep: Callable[[float], None] = time.sleep,
          report: Callable[[int, BuildOutcome], None] = lambda n, o: None) -> BuildOutcome | None:
    """Build now, then whenever the landing zone changed; returns the last outcome after
    max_builds builds (never, without it). A failed build is retried after interval, doubled
    per consecutive failure up to max_backoff, even if nothing landed."""
    built, last_seen, failures, last = 0, None, 0, None
    while max_builds is None or built < max_builds:
        seen = landing_fingerprint(landing_dir)
        if seen != last_seen or failures:
            # the listing is taken before the build: a file landing during it is built next
            last = build()
            built += 1
            report(built, last)
            if last.success:
                last_seen, failures = seen, 0
            else:
                failures += 1
            wait = min(interval * 2 ** failures, max_backoff) if failures else interval
        else:
            wait = interval
        if max_builds is not None and built >= max_builds:
            break
        sleep(wait)
    return last
