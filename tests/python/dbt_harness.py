"""Run the real dbt project on scratch databases from tests.

Builds run in a subprocess (`python -m dbt.cli.main`): each test gets a clean dbt and DuckDB
state, exactly as a user's `dbt build`. Many-case tests should work at the package level instead.
"""

from __future__ import annotations

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
