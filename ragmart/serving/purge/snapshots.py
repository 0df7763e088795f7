"""Step ``snapshots``: each published snapshot holding the document is replaced by a purged
copy under a new name, and serving switches to it.

A reader may hold the old file open (a long-lived Retriever): it is never written under. The
copy is purged and rewritten under a temporary name, renamed to its final name, then
serving.json and the history switch to it in one rename
(``ragmart.serving.pointer.replace_snapshot``), and only then is the old file removed. Each of
those states is one a later run recognises and finishes.
"""

from __future__ import annotations

import os
import re
import shutil

from ragmart.build.faults import fault_point
from ragmart.serving.pointer import replace_snapshot
from ragmart.serving.purge.database import delete_from_database, inspect_database, rewrite_database
from ragmart.serving.purge.deployment import TEMP_MARK, Deployment
from ragmart.serving.purge.plan import PurgeReport


def purged_name(name: str) -> str:
    """v1-<stamp>.duckdb -> v1-<stamp>-purged1.duckdb -> v1-<stamp>-purged2.duckdb ..."""
    stem = name.removesuffix(".duckdb")
    match = re.fullmatch(r"(.*)-purged(\d+)", stem)
    base, n = (match[1], int(match[2])) if match else (stem, 0)
    return f"{base}-purged{n + 1}.duckdb"


def step_snapshots(dep: Deployment, document_id: str, report: PurgeReport) -> None:
    for old in dep.snapshots():
        new = old.with_name(purged_name(old.name))
        if new.exists() and inspect_database(new, document_id).counts:
            new.unlink()  # an interrupted purge of another document made it: make it anew
        if new.exists():
            pass  # a purged copy made by an interrupted run: switch to it
        elif inspect_database(old, document_id).counts:
            # never write a file a reader may hold: purge a copy, then switch to it
            work = old.with_name(f".{new.name}{TEMP_MARK}copy")
            shutil.copyfile(old, work)
            for table, n in delete_from_database(work, document_id).items():
                report.rows_deleted[f"{old.name}:{table}"] = n
            rewrite_database(work)
            os.replace(work, new)
            fault_point("purge_snapshot_copied")
        else:
            continue
        replace_snapshot(dep.db_path, old.name, new.name)
        fault_point("purge_snapshot_switched")
        old.unlink(missing_ok=True)
        report.snapshots_replaced[old.name] = new.name
