"""`ragmart versions | publish | rollback | purge`: index versions and what serves."""

from __future__ import annotations

import argparse
import sys

from ragmart.cli.arguments import add_db, database, text
from ragmart.exit_codes import Exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="index versions, their metrics, which one serves")
    add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_versions)

    p = sub.add_parser("publish", help="snapshot a version and serve it if the eval gate passes")
    p.add_argument("version", type=text, help="index version, e.g. v2")
    add_db(p)
    p.add_argument("--force", action="store_true", help="publish despite the gate (recorded)")
    p.set_defaults(func=run_publish)

    p = sub.add_parser("rollback", help="serve the previously published snapshot again")
    add_db(p)
    p.set_defaults(func=run_rollback)

    p = sub.add_parser("purge", help="remove a document's text and vectors from every file")
    p.add_argument("--document-id", action="append", metavar="ID", type=text)
    add_db(p)
    p.add_argument("--flagged", action="store_true",
                   help="purge documents whose CDC delete carries purge=true")
    p.add_argument("--dry-run", action="store_true",
                   help="list every file and row the purge would change; change nothing")
    p.set_defaults(func=run_purge)


def run_versions(args: argparse.Namespace) -> int:
    import json

    from ragmart.duck import connect
    from ragmart.serving.pointer import current_publication, history
    from ragmart.serving.snapshots import list_versions

    db = database(args)
    conn = connect(db, read_only=True)
    try:
        versions = list_versions(conn)
    finally:
        conn.close()
    serving = current_publication(db)
    metrics = {p.version: p.metrics for p in history(db)}
    rows = []
    for v in versions:
        rows.append({
            **v.__dict__,
            "metrics": metrics.get(v.version, {}),
            "serving": bool(serving and serving.version == v.version),
            "published_snapshot": serving.snapshot if serving and serving.version == v.version
            else None,
        })
    postgres = _postgres_versions(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return Exit.DEGRADED if postgres and postgres.get("unreachable") else Exit.OK
    for r in rows:
        mark = "*" if r["serving"] else " "
        m = ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items())
        print(f"{mark} {r['version']}: {r['chunks']} chunks / {r['documents']} docs, "
              f"{r['embedding_model']} · {r['chunker_version']}, built {r['built_at']}, "
              f"~{r['size_bytes'] / 1e6:.1f} MB{', ' + m if m else ''}")
    if serving is None:
        print("nothing published: retrieval reads the build database")
    if postgres is not None:
        from ragmart.serving.postgres.versions import describe

        print("\n".join(describe(postgres)))
    return Exit.DEGRADED if postgres and postgres.get("unreachable") else Exit.OK


def _postgres_versions(rows: list[dict]) -> dict | None:
    """With RAGMART_SERVING_URL set: PostgreSQL's state, and in each version's row a "postgres"
    entry (whether PostgreSQL serves it, its publications there); None otherwise. When the
    server cannot be reached, the state says so ("unreachable": the reason, URL masked) and
    each row's entry is {"unreachable": the reason}: the DuckDB side is still shown, and the
    command exits DEGRADED."""
    from ragmart.serving.postgres.settings import serving_url

    url = serving_url()
    if url is None:
        return None
    from ragmart.serving.postgres.versions import postgres_state

    state = postgres_state(url)
    if state.get("unreachable"):
        for row in rows:
            row["postgres"] = {"unreachable": state["unreachable"]}
        return state
    serving = state["serving"] or {}
    for row in rows:
        row["postgres"] = {
            "serving": serving.get("version") == row["version"],
            "serving_publication_id": serving.get("publication_id")
            if serving.get("version") == row["version"] else None,
            "publications": [p for p in state["publications"] if p["version"] == row["version"]],
        }
    return state


def run_publish(args: argparse.Namespace) -> int:
    import json

    from ragmart.relations import check_version
    from ragmart.serving.publish import publish

    check_version(args.version)  # the argument first, then the file
    pub = publish(database(args), args.version, force=args.force)
    print(json.dumps(pub.__dict__, indent=2))
    from ragmart.serving.evaluation import last_evaluation  # how much the gate evaluated

    if note := last_evaluation(database(args), pub.version):
        print(note, file=sys.stderr)
    return Exit.OK


def run_rollback(args: argparse.Namespace) -> int:
    from ragmart.serving.rollback import rollback

    pub = rollback(database(args))
    if pub.postgres:
        print(f"postgres: serving publication #{pub.postgres['restores']} ({pub.version}) again "
              f"instead of #{pub.postgres['replaced']}; no data written")
    else:
        print(f"serving {pub.version} again ({pub.snapshot})")
    return Exit.OK


def run_purge(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from ragmart.ingest.purged import load_registry, registry_path
    from ragmart.serving.purge.deployment import Deployment
    from ragmart.serving.purge.run import complete_pending, purge_document

    deployment = Deployment.from_env()
    if args.db:  # --db names the build database; the rest of the deployment is as configured
        deployment = dataclasses.replace(deployment, db_path=database(args))
    ids = list(args.document_id or [])
    if args.flagged:
        from ragmart.duck import connect
        from ragmart.relations import EVENTS_TABLE

        conn = connect(deployment.db_path, read_only=True)
        try:
            flagged = [r[0] for r in conn.execute(
                f"select distinct document_id from {EVENTS_TABLE} where op = 'D' "
                "and try_cast(json_extract_string(metadata, '$.purge') as boolean)"
            ).fetchall()]
        finally:
            conn.close()
        done = load_registry(registry_path(deployment.db_path))
        ids += [d for d in flagged if d not in done]
    outputs = []
    if not args.dry_run:
        # an interrupted purge is completed before anything new starts
        outputs += [r.__dict__ for r in complete_pending(deployment)]
    elif not ids:
        raise ValueError("--dry-run needs --document-id ID (or --flagged)")
    if not ids and not outputs and not args.flagged:
        raise ValueError("nothing to purge: pass --document-id ID or --flagged")
    for document_id in dict.fromkeys(ids):
        result = purge_document(deployment, document_id, dry_run=args.dry_run)
        outputs.append(result.to_dict() if args.dry_run else result.__dict__)
    print(json.dumps(outputs, indent=2, ensure_ascii=False))
    for output in outputs:  # versions are not files: say it in words too
        removed = sum(len(ids) for ids in output.get("versions_deleted", {}).values())
        if removed and not args.dry_run:
            print(f"removed {removed} object versions holding {output['document_id']!r} "
                  f"({len(output['versions_deleted'])} objects of the versioned bucket)",
                  file=sys.stderr)
    return Exit.OK
