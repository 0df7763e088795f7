"""Run the real dbt project on scratch databases from tests.

Builds run in a subprocess (`python -m dbt.cli.main`): each test gets a clean dbt and DuckDB
state, exactly as a user's `dbt build`. Many-case tests should work at the package level instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LANDING = ROOT / "sample" / "landing"


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
        proc = subprocess.run(
            [sys.executable, "-m", "dbt.cli.main", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dbt {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc

    def build(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.dbt("build", *args, check=check)

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
