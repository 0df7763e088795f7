"""`ragmart retrieve`: the top-k chunks for a question, or an abstention (exit 3)."""

from __future__ import annotations

import argparse
import sys

from ragmart.cli.arguments import add_db, database, text
from ragmart.exit_codes import Exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieve", help="top-k chunks for a question (exit 3: abstained)")
    p.add_argument("question", type=text)
    p.add_argument("-k", type=int, default=5, help="number of chunks (default 5)")
    p.add_argument("--doc-type", action="append", metavar="T", type=text,
                   help="only chunks of this document type (repeatable)")
    p.add_argument("--contract", metavar="NAME", type=text,
                   help="apply this retrieval contract (retrieval_contracts.yml)")
    access = p.add_mutually_exclusive_group()
    access.add_argument("--groups", action="append", metavar="G[,G...]", type=text,
                        help="the caller's groups, checked against each document's "
                             "allowed_groups (repeatable or comma-separated); without it the "
                             "caller is in no group")
    access.add_argument("--all-groups", action="store_true",
                        help="operator switch: see every document whatever its allowed_groups")
    p.add_argument("--as-of", metavar="TIMESTAMP", type=text,
                   help="answer from the document versions live at this time (ISO, UTC)")
    p.add_argument("--mode", choices=("vector", "lexical", "hybrid"), default=None,
                   help="rank by meaning (vector), by the question's words (lexical, BM25) or "
                        "both fused (hybrid); default hybrid (vector without a full-text index)")
    p.add_argument("--contracts", metavar="FILE",
                   help="contract file (default $RAGMART_CONTRACTS or retrieval_contracts.yml)")
    add_db(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ragmart.retrieval.api import ALL_GROUPS, retrieve
    from ragmart.retrieval.document import parse_as_of, retrieval_document

    result = retrieve(
        args.question,
        k=args.k,
        doc_types=args.doc_type or None,
        contract=args.contract,
        groups=ALL_GROUPS if args.all_groups else _groups(args.groups),
        as_of=parse_as_of(args.as_of),
        db_path=database(args) if args.db else None,
        contracts_path=args.contracts,
        mode=args.mode,
    )
    state = None
    from ragmart.serving.postgres.settings import serving_url

    # what serves; --db names a file to read as it is (PostgreSQL serving: see ragmart versions)
    if args.db is None and serving_url() is None:
        from ragmart.config import Settings
        from ragmart.serving.lag import serving_state

        state = serving_state(Settings.from_env().db_path)
    if args.json:
        print(json.dumps(retrieval_document(args.question, result, state), indent=2,
                         ensure_ascii=False))
        return Exit.ABSTAINED if result.abstained else Exit.OK
    if state is not None and state.warning():
        print(f"ragmart retrieve: warning: {state.warning()}", file=sys.stderr)
    if result.abstained:
        print(f"abstained: {result.reason}")
        for clause in result.clauses:
            print(f"  {clause.clause:<24} excludes {clause.excluded:>6}, leaves {clause.remaining}")
        return Exit.ABSTAINED
    for r in result:
        print(f"{r.rank}. [{r.distance:.4f}] {r.title} — {r.section or '(top)'}")
        source = f" · {r.source}" if r.source else ""
        print(f"   {r.document_id} v{r.document_version} · {r.chunk_id} · {r.section_type}{source}")
        body = r.chunk_text.split("\n\n", 1)[-1].replace("\n", " ")
        print(f"   {body[:300]}{'…' if len(body) > 300 else ''}")
    return Exit.OK


def _groups(values: list[str] | None) -> list[str] | None:
    """--groups hr,managers --groups finance -> ['hr', 'managers', 'finance']."""
    if values is None:
        return None
    return [g.strip() for value in values for g in value.split(",") if g.strip()]
