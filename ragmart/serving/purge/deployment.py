"""The files a purge covers: the build database, its snapshots, the landing zone, and the dbt
target and log directories (eval reports live under the target dir)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ragmart.config import Settings
from ragmart.ingest.landing import LandingZoneError, list_landing_files
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

    def landing_files(self) -> list[tuple[str, Path]]:
        """(relative path as ingestion names it, file) of every file under the landing zone, as
        ingestion lists it (ragmart.ingest.landing.list_landing_files): the files it reads, the
        ones it reports as unsupported, and the hidden ones it skips (a partial upload may hold
        the text too)."""
        if self.landing_dir is None or not Path(self.landing_dir).is_dir():
            return []
        try:
            listed = list_landing_files(self.landing_dir)
        except LandingZoneError:  # no layout folder: nothing ingestion would read
            return []
        return [(f.relative_path, Path(f.path)) for f in listed]

    def snapshots(self) -> list[Path]:
        folder = self.publish_dir
        return sorted(folder.glob("v*.duckdb")) if folder.is_dir() else []


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename (its mode kept when it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)
