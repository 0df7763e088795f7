"""What the PostgreSQL serving target holds: its publications and which one serves (read
only; `ragmart versions` prints it beside the DuckDB snapshots, the publish gate reads the
serving report)."""

from __future__ import annotations

from ragmart.serving.postgres.schema import PUBLICATIONS, SCHEMA, SERVING, data_tables
from ragmart.serving.postgres.settings import PostgresServingError, connect, masked

# the publications columns `ragmart versions` shows (the report is summarized by its metrics)
_SHOWN = ("publication_id", "version", "action", "published_at", "incremental", "rows_written",
          "rows_removed", "chunks", "embedding_model", "chunker_version", "snapshot", "forced",
          "gate_failures", "restores", "pruned_at")


def _installed(conn) -> bool:
    return conn.execute("select to_regclass(%s) is not null and to_regclass(%s) is not null",
                        (PUBLICATIONS, SERVING)).fetchone()[0]


def serving_report(url: str) -> dict | None:
    """The evaluation report of what PostgreSQL serves (the newest one recorded for the serving
    publication: its publish, a rollback to it, or a refresh after a purge); None before the
    first publish."""
    with connect(url) as conn:
        if not _installed(conn):
            return None
        row = conn.execute(
            f"select p.report from {SERVING} as s join {PUBLICATIONS} as p on "
            "coalesce(p.restores, p.publication_id) = s.publication_id "
            "order by p.publication_id desc limit 1").fetchone()
    return row[0] if row and row[0] else None


def postgres_state(url: str) -> dict:
    """{"target": the masked URL, "serving": {publication_id, version, switched_at} or None,
    "publications": [every publication, newest first, with its metrics], "tables": {data table:
    {rows, live_rows}}}; when the server cannot be reached, "unreachable": why (URL masked)."""
    state: dict = {"target": masked(url), "serving": None, "publications": [], "tables": {}}
    try:
        conn = connect(url)
    except PostgresServingError as exc:
        return {**state, "unreachable": str(exc)}
    with conn:
        if not _installed(conn):
            return state
        row = conn.execute(f"select publication_id, version, switched_at::text from {SERVING}"
                           ).fetchone()
        if row:
            state["serving"] = dict(zip(("publication_id", "version", "switched_at"), row,
                                        strict=True))
        cols = ", ".join(f"{c}::text" if c.endswith("_at") else c for c in _SHOWN)
        for values in conn.execute(f"select {cols}, report -> 'metrics' from {PUBLICATIONS} "
                                   "order by publication_id desc").fetchall():
            pub = dict(zip(_SHOWN, values[:-1], strict=True))
            pub["metrics"] = values[-1] or {}
            state["publications"].append(pub)
        for table in data_tables(conn):
            rows, live = conn.execute(
                "select count(*), count(*) filter (where removed_in is null) "
                f'from {SCHEMA}."{table}"').fetchone()
            state["tables"][table] = {"rows": rows, "live_rows": live}
    return state


def describe(state: dict) -> list[str]:
    """`postgres_state` as the lines `ragmart versions` prints."""
    if state.get("unreachable"):
        return [f"postgres {state['target']}: unreachable, its state is unknown "
                f"({state['unreachable']})"]
    lines = [f"postgres {state['target']}:"]
    serving = state["serving"]
    if serving is None:
        return [*lines, "  nothing published to postgres yet"]
    for pub in state["publications"]:
        mark = "*" if pub["publication_id"] == serving["publication_id"] else " "
        what = (f"restores #{pub['restores']}" if pub["action"] == "rollback" else
                f"{'incremental' if pub['incremental'] else 'full'}: {pub['rows_written']} rows "
                f"written, {pub['rows_removed']} removed, {pub['chunks']} chunks")
        pruned = ", pruned" if pub["pruned_at"] else ""
        forced = ", FORCED" if pub["forced"] else ""
        lines.append(f"{mark} #{pub['publication_id']} {pub['action']} {pub['version']} at "
                     f"{pub['published_at']} ({what}{forced}{pruned})")
    return lines
