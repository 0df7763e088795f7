"""A reader process for the concurrency test: retrieves in a loop, one JSON line per answer."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ragmart.retrieval.api import ALL_GROUPS, Retriever
from ragmart.serving.pointer import resolve_target


def main(db_path: str, stop_file: str, out: str, max_seconds: float = 600) -> None:
    """Loop until `stop_file` exists (or max_seconds pass)."""
    rng = np.random.default_rng(3)
    deadline = time.monotonic() + max_seconds
    with open(out, "w") as handle:
        while time.monotonic() < deadline and not Path(stop_file).exists():
            record: dict = {}
            try:
                target = resolve_target(Path(db_path))
                record |= {"database": str(target.database), "version": target.version,
                           "published": target.published}
                # the file the pointer names, pinned for one search (a new reader each time)
                with Retriever(db_path=target.database, index_version=target.version,
                               vectors_in_memory=False) as reader:
                    hits = reader.search(rng.normal(size=384).astype(np.float32), k=5,
                                         groups=ALL_GROUPS)
                record["chunk_ids"] = [h.chunk_id for h in hits]
                record["invocations"] = sorted({h.dbt_invocation_id for h in hits})
            except Exception as exc:  # the test asserts there are none
                record["error"] = f"{type(exc).__name__}: {exc}"
            handle.write(json.dumps(record) + "\n")
            handle.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
