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


def seconds_from_env(name: str, *, strictly_positive: bool = False) -> float | None:
    """A duration setting in seconds from the environment variable `name`: None when unset or
    blank, else a number >= 0 (> 0 with `strictly_positive`). Raises ValueError naming the
    variable and the value; callers re-raise it as their own error with the default to write."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 if strictly_positive else seconds >= 0):  # nan fails both
        raise ValueError(f"{name}={text!r} is not a number of seconds "
                         f"{'> 0' if strictly_positive else '>= 0'}")
    return seconds
