"""The `ragmart` command: retrieve, eval, stats."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_ERROR = 2


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from ragmart.retrieval import retrieve

    results = retrieve(args.question, k=args.k, doc_types=args.doc_type or None)
    if args.json:
        print(
            json.dumps(
                {"question": args.question, "k": args.k, "results": [r.to_dict() for r in results]},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if not results:
        print("no chunks in the serving table")
        return 0
    for r in results:
        print(f"{r.rank}. [{r.distance:.4f}] {r.title} — {r.section or '(top)'}")
        print(f"   {r.document_id} v{r.document_version} · {r.chunk_id} · {r.section_type}")
        body = r.chunk_text.split("\n\n", 1)[-1].replace("\n", " ")
        print(f"   {body[:300]}{'…' if len(body) > 300 else ''}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ragmart.config import Settings
    from ragmart.duck import connect
    from ragmart.evaluation import evaluate, load_judged_queries
    from ragmart.providers import get_provider
    from ragmart.retrieval import SERVING_TABLE, search

    settings = Settings.from_env()
    provider = get_provider(settings.embedding_provider)
    queries = load_judged_queries(args.queries)
    vectors = provider.embed([q.question for q in queries])
    by_question = {q.question: v for q, v in zip(queries, vectors, strict=True)}
    conn = connect(settings.db_path, read_only=True)
    try:
        def run(question: str) -> list[str]:
            hits = search(conn, by_question[question], k=args.depth, table=SERVING_TABLE)
            return [h.document_id for h in hits]

        report = evaluate(queries, run, k=args.k)
    finally:
        conn.close()
    summary = {
        "queries": report.queries,
        "k": report.k,
        f"recall@{report.k}": round(report.recall_at_k, 4),
        "mrr": round(report.mrr, 4),
        "embedding_model": provider.model,
    }
    if args.json:
        summary["per_query"] = report.per_query
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from ragmart.config import Settings
    from ragmart.duck import connect
    from ragmart.runs import RUNS_TABLE

    conn = connect(Settings.from_env().db_path, read_only=True)
    try:
        rows = conn.execute(
            f"select * from {RUNS_TABLE} order by finished_at desc limit {int(args.last)}"
        )
        names = [d[0] for d in rows.description]
        data = [dict(zip(names, row, strict=True)) for row in rows.fetchall()]
    finally:
        conn.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for run in data:
        print(
            f"{run['finished_at']:%Y-%m-%d %H:%M:%S} {run['invocation_id'][:8]} "
            f"{run['embedding_model']}: {run['texts_sent']} texts in "
            f"{run['provider_calls']} calls, "
            f"{run['cache_hits']} cache hits, {run['chunks_in_serving_set']} serving chunks, "
            f"~{run['approx_tokens']} tokens, {run['seconds']:.1f}s"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragmart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("retrieve", help="top-k chunks for a question")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5, help="number of chunks (default 5)")
    p.add_argument("--doc-type", action="append", metavar="T",
                   help="only chunks of this document type (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_cmd_retrieve)

    p = sub.add_parser("eval", help="recall@k and MRR on the judged query set")
    p.add_argument("--queries", default="seeds/judged_queries.csv")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--depth", type=int, default=50, help="chunks retrieved per query")
    p.add_argument("--json", action="store_true", help="include per-query results")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("stats", help="what recent builds asked of the embedding provider")
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)
    from ragmart.cli_serving import register as register_serving

    register_serving(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # every failure becomes one clear line and an exit code
        from ragmart.retrieval import RetrievalError
        from ragmart.serving import ServingError

        known = (RetrievalError, ServingError, ValueError, FileNotFoundError)
        if not isinstance(exc, known):
            raise
        print(f"ragmart {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
