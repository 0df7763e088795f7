"""The files a purge covers: the build database, its snapshots, the landing zone, and the dbt
target and log directories (eval reports live under the target dir)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ragmart.config import Settings
from ragmart.ingest.store import LandingStore, open_store, replace_file
from ragmart.serving.pointer import ServingError, publish_dir

# every temporary file of a purge carries it in its name; the next run removes them
TEMP_MARK = ".purge-"


class PurgeError(ServingError):
    pass


@dataclass(frozen=True)
class Deployment:
    """The files a purge covers (see the module docstring)."""

    db_path: Path
    landing_dir: Path | None
    artifact_dirs: tuple[Path, ...] = ()

    @classmethod
    def from_env(cls) -> Deployment:
        settings = Settings.from_env()
        base = Path(os.environ.get("DBT_PROJECT_DIR", "."))
        dirs = tuple(
            path if path.is_absolute() else base / path
            for path in (Path(os.environ.get("DBT_TARGET_PATH", "target")),
                         Path(os.environ.get("DBT_LOG_PATH", "logs")))
        )
        return cls(settings.db_path, settings.landing_dir, dirs)

    @property
    def publish_dir(self) -> Path:
        return publish_dir(self.db_path)

    @functools.cached_property
    def landing_store(self) -> LandingStore | None:
        """The landing zone as ingestion reads it (a folder or an S3 prefix); None when none
        is configured. One per deployment: an S3 client costs a few tenths of a second."""
        return None if self.landing_dir is None else open_store(self.landing_dir)

    def snapshots(self) -> list[Path]:
        folder = self.publish_dir
        return sorted(folder.glob("v*.duckdb")) if folder.is_dir() else []


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename (its mode kept when it exists)."""
    replace_file(path, data, path.with_name(f".{path.name}{TEMP_MARK}tmp"))
