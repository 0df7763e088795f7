"""Settings from the environment (the public interface documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    db_path: Path
    landing_dir: Path
    embedding_provider: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            db_path=Path(os.environ.get("RAGMART_DB", "ragmart.duckdb")),
            landing_dir=Path(os.environ.get("RAGMART_LANDING_DIR", "data/landing")),
            embedding_provider=os.environ.get("RAGMART_EMBEDDING_PROVIDER", "local"),
        )
