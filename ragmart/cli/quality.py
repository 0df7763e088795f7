"""`ragmart freshness | eval | stats`: how fresh, how good and how costly the index is."""

from __future__ import annotations

import argparse

from ragmart.cli.arguments import add_db, count, database, positive, text
from ragmart.cli.errors import UsageError
from ragmart.exit_codes import Exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("freshness", help="lag, stale and orphaned embeddings, last change applied")
    add_db(p)
    p.add_argument("--index-version", metavar="vN",
                   help="the version to report (default: the published one, else "
                        "$RAGMART_INDEX_VERSION or v1)")
    p.add_argument("--sla-minutes", type=positive, metavar="M",
                   help="lag SLA (default $RAGMART_EMBEDDING_LAG_SLA_MINUTES or 1440)")
    p.add_argument("--check", action="store_true",
                   help=f"exit {Exit.CHECK_FAILED} when anything is stale, orphaned or over "
                        "the SLA")
    p.add_argument("--serving-sla-seconds", type=float, metavar="S",
                   help=f"serving lag SLA: exit {Exit.CHECK_FAILED} while a landed change has "
                        "waited longer than this to become visible to readers (default "
                        "$RAGMART_SERVING_SLA_SECONDS; none: report only)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_freshness)

    p = sub.add_parser("eval", help="recall@k, MRR and nDCG@10 of versions on the judged set")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", metavar="vN", type=text,
                       help="version to evaluate (default: the serving or newest version)")
    which.add_argument("--compare", nargs=2, metavar=("BASELINE", "CANDIDATE"), type=text,
                       help="evaluate two versions and gate the candidate on the baseline")
    p.add_argument("-k", type=int, default=5, help="recall@k cut-off (default 5)")
    p.add_argument("--out", default="target/eval",
                   help="directory of the Markdown report and plot (default target/eval)")
    add_db(p, "database file holding the versions")
    p.add_argument("--queries", metavar="FILE",
                   help="judged queries CSV (default seeds/judged_queries.csv, in the working "
                        "directory or under $DBT_PROJECT_DIR)")
    p.add_argument("--tolerance", action="append", metavar="METRIC=VALUE", type=text,
                   help="largest allowed drop of a metric for --compare (repeatable; defaults "
                        "recall@5=0.02 mrr=0.03 ndcg@10=0.03)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="accepted for compatibility, no effect: --compare always exits "
                        f"{Exit.GATE_REFUSED} when the candidate fails the gate")
    p.add_argument("--modes", action="store_true",
                   help="also compare the search modes (vector, lexical, hybrid) on the whole "
                        "set and on its exact-term questions (qxNN)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("stats", help="what recent builds asked of the embedding provider")
    p.add_argument("--last", type=count, default=10, metavar="N",
                   help="the N most recent builds (default 10)")
    add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_stats)


def run_freshness(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import duckdb

    from ragmart.config import Settings
    from ragmart.quality.freshness import freshness, render
    from ragmart.serving.lag import render as render_serving
    from ragmart.serving.lag import serving_lag, serving_state
    from ragmart.serving.publish import auto_publish_status

    settings = Settings.from_env()
    db = database(args)
    try:
        result = freshness(db, index_version=args.index_version, sla_minutes=args.sla_minutes)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        result = None  # a build holds the build database: its own facts are unknown for now
    state = serving_state(db)
    lag = serving_lag(db, settings.landing_dir, sla_seconds=args.serving_sla_seconds)
    attempt = auto_publish_status(db)
    if args.json:
        print(json.dumps({
            **(result.to_dict() if result else {"database": str(db), "healthy": None}),
            "serving": {
                **(state.to_dict() if state else {"published": False}),
                "auto_publish": dataclasses.asdict(attempt) if attempt else None,
                "serving_lag": lag.to_dict(),
            },
        }, indent=2, default=str, ensure_ascii=False))
    else:
        print(render(result) if result else
              f"freshness of {db}: unknown (a build holds the database; retry when it ends)")
        print(render_serving(state, lag, db))
    if lag.over_sla:
        return Exit.CHECK_FAILED
    return Exit.CHECK_FAILED if args.check and result and not result.healthy else Exit.OK


def run_eval(args: argparse.Namespace) -> int:
    import json

    from ragmart.quality.evaluation import default_version, evaluate_version, open_version
    from ragmart.quality.gate import effective_tolerance, gate, parse_tolerances
    from ragmart.quality.judged import load_judged_queries
    from ragmart.quality.report import write_report

    queries = load_judged_queries(args.queries)
    tolerance = effective_tolerance(parse_tolerances(args.tolerance or []), args.k)
    # without --db, each version is read where it lives (its published snapshot when serving)
    db = database(args) if args.db else None
    versions = list(args.compare or [args.version or default_version(db)])
    reports = []
    for version in versions:
        conn = open_version(version, db)
        try:
            reports.append(evaluate_version(conn, version, queries, k=args.k))
        finally:
            conn.close()
    result = gate(reports[1], reports[0], tolerance) if args.compare else None
    markdown, plot = write_report(reports, args.out, result,
                                  tolerance=tolerance if result else None)
    by_mode = _eval_modes(args, db, versions[-1], queries, markdown) if args.modes else None
    if args.json:
        print(json.dumps({
            **({"modes": [m.to_dict() for m in by_mode]} if by_mode is not None else {}),
            "reports": [r.to_dict(per_query=True) for r in reports],
            "gate": None if result is None else {
                "baseline": versions[0], "candidate": versions[1], "passed": result.passed,
                "failures": result.failures, "tolerance": tolerance,
            },
            "markdown": str(markdown),
            "plot": str(plot),
        }, indent=2, ensure_ascii=False))
    else:
        for r in reports:
            print(f"{r.version} ({r.embedding_model}, {r.queries} questions): "
                  + "  ".join(f"{name} {value:.4f}" for name, value in r.metrics().items()))
            for name, m in r.by_document_type.items():
                print(f"  {name} ({m.queries}): recall@{r.k} {m.recall_at_k:.4f}  "
                      f"mrr {m.mrr:.4f}  ndcg@10 {m.ndcg_at_10:.4f}")
        if result is not None:
            print(f"gate (baseline {versions[0]}, candidate {versions[1]}): "
                  + ("passed" if result.passed else "FAILED"))
            for failure in result.failures:
                print(f"  - {failure}")
        if by_mode is not None:
            from ragmart.quality.modes import render_modes

            print(render_modes(by_mode), end="")
        print(f"report: {markdown}\nplot: {plot}")
    # the gate's verdict is the exit code (--fail-on-regression, once needed for it, is a no-op)
    return Exit.GATE_REFUSED if result is not None and not result.passed else Exit.OK


def _eval_modes(args: argparse.Namespace, db, version: str, queries, markdown):
    """`--modes`: every search mode on the judged set, its table appended to the report."""
    from ragmart.quality.modes import evaluate_modes, render_modes
    from ragmart.serving.pointer import resolve_target

    path = db if db is not None else resolve_target(None, version).database
    by_mode = evaluate_modes(path, version, queries, k=args.k)
    with open(markdown, "a", encoding="utf-8") as report:
        report.write("\n" + render_modes(by_mode))
    return by_mode


def run_stats(args: argparse.Namespace) -> int:
    import json

    from ragmart.duck import connect
    from ragmart.embedding.runs import recent_runs
    from ragmart.relations import RUNS_TABLE

    db = database(args)
    conn = connect(db, read_only=True)
    try:
        if not conn.execute("select count(*) from information_schema.tables where "
                            "table_name = $t and table_catalog = current_database()",
                            {"t": RUNS_TABLE}).fetchone()[0]:
            raise UsageError(f"{db} has no {RUNS_TABLE} table: no build has run on it; run "
                             "`dbt build` first, or pass the database it built with --db FILE")
        data = recent_runs(conn, args.last)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return Exit.OK
    for run in data:
        # retries, estimated_cost_usd and error are null on runs recorded before they existed
        cost = run.get("estimated_cost_usd")
        print(
            f"{run['finished_at']:%Y-%m-%d %H:%M:%S} {run['invocation_id'][:8]} "
            f"{run['embedding_model']}: {run['texts_sent']} texts in "
            f"{run['provider_calls']} calls ({run.get('retries') or 0} retries), "
            f"{run['cache_hits']} cache hits, {run['chunks_in_serving_set']} serving chunks, "
            f"~{run['approx_tokens']} tokens, "
            f"{'cost unknown' if cost is None else f'${cost:.6f}'}, {run['seconds']:.1f}s"
            + (f" FAILED: {run['error'][:200]}" if run.get("error") else "")
        )
    return Exit.OK
