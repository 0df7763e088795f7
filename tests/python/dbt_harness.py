"""Run the real dbt project on scratch databases from tests.

Builds run in a process of their own (`python -m dbt.cli.main`, forked by `dbt_fork.ForkServer`
with dbt already imported): each test gets a clean dbt and DuckDB state, exactly as a user's `dbt
build`. Many-case tests should work at the package level instead.

dbt runs in the test's workdir as a user runs it in a project directory: the workdir links the
project's files (`_link_project`) and the database is named relative to it (`ragmart.duckdb`, the
default's form). So every test's dbt sees the same profile, and a parse made for one test is valid
for the next: `ParseCache` hands dbt its own partial-parse file (~4 s of CPU per first build: a
full parse is most of a small build). The landing zone stays as the test set it (absolute): it is
a setting whose form the product reports (a relative one is named with the directory it was
resolved from), and dbt re-parses the two files that read it when it changes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dbt_fork import ForkServer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LANDING = ROOT / "sample" / "landing"
# What dbt reads from the project directory (profiles.yml: DBT_PROFILES_DIR names ROOT).
PROJECT_ENTRIES = ("dbt_project.yml", "models", "python_models", "macros", "tests", "seeds",
                   "snapshots", "analyses", "packages.yml", "selectors.yml")


@dataclass
class Project:
    """A scratch ragmart deployment: its own database, landing zone and dbt target dir."""

    workdir: Path
    provider: str = "hash"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.workdir / "ragmart.duckdb"

    @property
    def landing(self) -> Path:
        return self.workdir / "landing"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RAGMART_DB": str(self.db_path),
                "RAGMART_LANDING_DIR": str(self.landing),
                "RAGMART_EMBEDDING_PROVIDER": self.provider,
                "DBT_PROFILES_DIR": str(ROOT),
                "DBT_PROJECT_DIR": str(ROOT),
                "DBT_TARGET_PATH": str(self.workdir / "target"),
                "DBT_LOG_PATH": str(self.workdir / "logs"),
                "DO_NOT_TRACK": "1",
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def land(self, relative_path: str, data: bytes | str) -> Path:
        path = self.landing / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def land_sample(self, names: list[str] | None = None) -> None:
        for layout in ("dms", "debezium"):
            for src in sorted((SAMPLE_LANDING / layout).glob("*")):
                if names is None or src.name in names:
                    self.land(f"{layout}/{src.name}", src.read_bytes())

    def dbt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env, cwd, key = self.env(), ROOT, None
        if env["DBT_PROJECT_DIR"] == str(ROOT) and _link_project(self.workdir):
            env, cwd = self._project_env(env), self.workdir
            key = PARSES.key(env, args)
        target = Path(env["DBT_TARGET_PATH"])
        PARSES.give(key, target)
        proc = DBT.run(list(args), env=env, cwd=cwd)
        PARSES.keep(key, target)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dbt {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc

    def build(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.dbt("build", *args, check=check)

    def _project_env(self, env: dict[str, str]) -> dict[str, str]:
        """dbt run in the workdir: the database named relative to it (unless the test set its own
        value). Only the database: the profile's attach path is part of the profile's hash, and a
        profile that differs means a full parse. Every other setting is the test's own."""
        env = env | {"DBT_PROJECT_DIR": str(self.workdir)}
        if env.get("RAGMART_DB") == str(self.db_path):
            env["RAGMART_DB"] = self.db_path.name
        return env

    def ragmart(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "ragmart.cli.main", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ragmart {args} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def query(self, sql: str, params: object = None) -> list[tuple]:
        from ragmart.duck import connect

        conn = connect(self.db_path, read_only=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def last_run(self) -> dict:
        from ragmart.duck import connect
        from ragmart.embedding.runs import recent_runs

        conn = connect(self.db_path, read_only=True)
        try:
            return recent_runs(conn, 1)[0]
        finally:
            conn.close()


def copy_project(destination: Path) -> Path:
    """A copy of the dbt project (for tests that must change a model)."""
    for name in ("models", "macros", "python_models", "tests", "seeds"):
        shutil.copytree(
            ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(ROOT / name, destination / name)
    return destination


def _link_project(workdir: Path) -> bool:
    """Link the project's files into `workdir` (False when one of their names is taken)."""
    entries = [(workdir / name, ROOT / name) for name in PROJECT_ENTRIES if (ROOT / name).exists()]
    if any(link.exists() and not link.is_symlink() for link, _ in entries):
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    for link, source in entries:
        if not link.is_symlink():
            link.symlink_to(source)
    return True


def _unlink_project(workdir: Path) -> None:
    for name in PROJECT_ENTRIES:
        if (workdir / name).is_symlink():
            (workdir / name).unlink()


class ParseCache:
    """dbt's partial-parse file, kept per pytest process for each set of parse inputs (the
    settings and the --vars, --target and --profile arguments) and given to every dbt run with
    the same inputs, in a workdir that links the project (its files are ROOT's, wherever it is).
    dbt still checks the file (project files, vars, profile, env vars) and parses again when it
    does not hold. A run whose inputs have no entry starts without one (a file left by another
    run of the same test would only fail that check), and its parse is kept."""

    FILE = "partial_parse.msgpack"
    PARSE_ARGS = ("--vars", "--target", "-t", "--profile")
    # Not parse inputs of the key: where this run writes, and the landing zone, which is each
    # test's own folder. dbt records the env vars each schema file read and re-parses those files
    # when one changed (the landing zone: _landing__sources.yml and _landing__models.yml; checked:
    # a parse kept from one test, given to another, builds from that other test's landing zone).
    PER_RUN = ("DBT_TARGET_PATH", "DBT_LOG_PATH", "DBT_PROJECT_DIR", "RAGMART_LANDING_DIR")

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._kept: dict[str, Path] = {}

    def key(self, env: dict[str, str], args: tuple[str, ...]) -> str | None:
        if any(arg.startswith(("--project-dir", "--profiles-dir", "--target-path"))
               for arg in args):
            return None
        settings = sorted((name, value) for name, value in env.items()
                          if name.startswith(("RAGMART_", "DBT_", "OPENAI_"))
                          and name not in self.PER_RUN)
        parse_args = [arg for i, arg in enumerate(args)
                      if arg.startswith(self.PARSE_ARGS)
                      or (i and args[i - 1] in self.PARSE_ARGS)]
        return hashlib.blake2b(dumps([settings, parse_args]).encode()).hexdigest()

    def give(self, key: str | None, target: Path) -> None:
        if key is None:
            return
        (target / self.FILE).unlink(missing_ok=True)
        if key in self._kept:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._kept[key], target / self.FILE)

    def keep(self, key: str | None, target: Path) -> None:
        if key is None or key in self._kept or not (target / self.FILE).is_file():
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ragmart-parses-"))
            atexit.register(shutil.rmtree, self._dir, True)
        kept = self._dir / f"{key}.msgpack"
        shutil.copyfile(target / self.FILE, kept)
        self._kept[key] = kept


PARSES = ParseCache()
DBT = ForkServer()


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class BuiltSamples:
    """The sample, landed and built once per pytest process for each (provider, environment),
    then copied into each test's workdir: the database, the landing zone (mtimes kept: the
    landing zone's incremental logic reads them) and the dbt target dir.

    Only for tests that do not assert on that first build (its output, its run record, its
    timing). The cache is made read-only and is only ever copied, never linked: a test can
    change its copy (purge, rebuild, publish) and never the cache; each copy is checked against
    the digest of the cache taken just after its build. The build keeps source paths relative
    to the landing zone, which `_assert_no_absolute_paths` checks once per cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple, Path] = {}
        self._digests: dict[Path, str] = {}

    def copy(self, workdir: Path, provider: str = "hash",
             extra_env: dict[str, str] | None = None) -> Project:
        env = dict(extra_env or {})
        source = self._source(provider, env)
        workdir.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir():
            destination = workdir / entry.name
            if entry.is_dir():
                shutil.copytree(entry, destination, copy_function=shutil.copy2)
                copied = [destination, *destination.rglob("*")]
            else:
                shutil.copy2(entry, destination)
                copied = [destination]
            for path in copied:  # copy2 kept the cache's read-only mode: the copy is the test's
                path.chmod(path.stat().st_mode | 0o200)
        # read-only does not stop root: the copy is the cache as built, bytes and mtimes
        assert _digest(workdir, source) == self._digests[source], f"{source} was changed"
        return Project(workdir, provider=provider, extra_env=env)

    def _source(self, provider: str, env: dict[str, str]) -> Path:
        key = (provider, tuple(sorted(env.items())))
        if key not in self._built:
            project = Project(self.root / f"sample-{len(self._built)}", provider=provider,
                              extra_env=env)
            project.land_sample()
            project.build()
            shutil.rmtree(project.workdir / "logs", ignore_errors=True)
            _unlink_project(project.workdir)  # a copy links them again at its first dbt run
            _assert_no_absolute_paths(project)
            for path in project.workdir.rglob("*"):
                path.chmod(path.stat().st_mode & ~0o222)
            self._built[key] = project.workdir
            self._digests[project.workdir] = _digest(project.workdir, project.workdir)
        return self._built[key]


def _digest(root: Path, source: Path) -> str:
    """Every file of `source`'s tree as found under `root`: name, bytes and mtime."""
    digest = hashlib.blake2b()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        copy = root / path.relative_to(source)
        digest.update(f"{path.relative_to(source)}\0{copy.stat().st_mtime_ns}\0".encode())
        digest.update(copy.read_bytes())
    return digest.hexdigest()


def _assert_no_absolute_paths(project: Project) -> None:
    """No text in the built database names the cache's directory: a copy refers to its own
    landing zone only (a purge in one test can never reach the cache or another copy)."""
    from ragmart.duck import connect

    conn = connect(project.db_path, read_only=True)
    try:
        columns = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR' and table_catalog = current_database()").fetchall()
        for schema, table, column in columns:
            hits = conn.execute(
                f'select count(*) from "{schema}"."{table}" where "{column}" like $p',
                {"p": f"%{project.workdir}%"}).fetchone()[0]
            assert hits == 0, f"{schema}.{table}.{column} names {project.workdir}"
    finally:
        conn.close()
