"""`ragmart postgres grant | revoke`: which access groups a database role of the PostgreSQL
serving database (RAGMART_SERVING_URL) reads, through row-level security."""

from __future__ import annotations

import argparse

from ragmart.cli.arguments import text
from ragmart.exit_codes import Exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postgres", help="database roles of the PostgreSQL serving database")
    commands = p.add_subparsers(dest="postgres_command", required=True)
    grant = commands.add_parser(
        "grant", help="map a database role to access groups: whatever SQL it runs, it reads "
                      "only the serving chunks those groups admit")
    grant.add_argument("role", type=text, help="an existing database role")
    access = grant.add_mutually_exclusive_group(required=True)
    access.add_argument("--groups", action="append", metavar="G[,G...]", type=text,
                        help="its access groups (repeatable or comma-separated)")
    access.add_argument("--all-groups", action="store_true",
                        help="operator switch: it reads every document")
    grant.set_defaults(func=run_grant)
    revoke = commands.add_parser("revoke", help="unmap a database role: it reads no row")
    revoke.add_argument("role", type=text)
    revoke.set_defaults(func=run_revoke)


def _url() -> str:
    from ragmart.serving.postgres.settings import SERVING_URL_ENV, serving_url

    url = serving_url()
    if url is None:
        raise ValueError(f"{SERVING_URL_ENV} is not set; set it to the PostgreSQL serving "
                         "database, postgresql://user:password@host:5432/database")
    return url


def run_grant(args: argparse.Namespace) -> int:
    from ragmart.cli.retrieve import _groups
    from ragmart.serving.postgres.access import grant_groups
    from ragmart.serving.postgres.settings import connect

    groups = _groups(args.groups) or []
    if not args.all_groups and not groups:
        raise ValueError("--groups names no group; name at least one (or --all-groups)")
    with connect(_url()) as conn:
        grant_groups(conn, args.role, groups, all_groups=args.all_groups)
    what = "every group (--all-groups)" if args.all_groups else ", ".join(groups)
    print(f"role {args.role} reads the serving chunks of: {what}")
    return Exit.OK


def run_revoke(args: argparse.Namespace) -> int:
    from ragmart.serving.postgres.access import revoke_groups
    from ragmart.serving.postgres.settings import connect

    with connect(_url()) as conn:
        mapped = revoke_groups(conn, args.role)
    print(f"role {args.role} reads no row" + ("" if mapped else " (it was not mapped)"))
    return Exit.OK
