"""`ragmart serve` (the HTTP retrieval service) and `ragmart keys` (its API keys)."""

from __future__ import annotations

import argparse

from ragmart.cli.arguments import database, text
from ragmart.exit_codes import Exit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the HTTP retrieval service (POST /v1/retrieve)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--keys", metavar="FILE", help="API keys file (default "
                   "$RAGMART_API_KEYS_FILE)")
    p.add_argument("--db", metavar="FILE", help="serve this database file as it is (default: "
                   "the snapshot $RAGMART_DB's serving pointer names, followed as it changes)")
    p.add_argument("--workers", type=int, metavar="N", help="threads running searches, each "
                   "with its own reader (default $RAGMART_SERVE_WORKERS, else one per core, at "
                   "least 2, or 8 serving from PostgreSQL)")
    p.set_defaults(func=run_serve)

    p = sub.add_parser("keys", help="API keys of `ragmart serve`: add, list, remove")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a key (printed once, stored hashed)")
    add.add_argument("name", type=text)
    access = add.add_mutually_exclusive_group(required=True)
    access.add_argument("--groups", metavar="G[,G...]", type=text,
                        help="the groups the key's requests search as")
    access.add_argument("--all-groups", action="store_true",
                        help="operator key: sees every document whatever its allowed_groups")
    for action in (add, actions.add_parser("list", help="names, groups, creation times"),
                   actions.add_parser("remove", help="revoke a key by name")):
        if action.prog.endswith("remove"):
            action.add_argument("name", type=text)
        action.add_argument("--keys", metavar="FILE",
                            help="API keys file (default $RAGMART_API_KEYS_FILE)")
    p.set_defaults(func=run_keys)


def run_serve(args: argparse.Namespace) -> int:
    import logging
    import os

    # one thread per numpy product, before numpy loads: the service runs searches side by side
    # on RAGMART_SERVE_WORKERS threads, and BLAS threads inside each only contend (measured with
    # bench/serve.py: CPU per query 41 -> 28 ms at 100k chunks, with DuckDB's threads = 1)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

    import uvicorn

    from ragmart.http.app import create_app
    from ragmart.http.keys import KeyRing, keys_path
    from ragmart.http.limits import WORKERS_ENV

    if args.workers is not None and not 1 <= args.workers <= 256:
        raise ValueError(f"--workers {args.workers} is out of range; write 1 to 256")
    if args.workers is not None:  # read with the other bounds (ragmart.http.limits.Limits)
        os.environ[WORKERS_ENV] = str(args.workers)
    keys = keys_path(args.keys)
    KeyRing.load(keys)  # a missing or invalid keys file stops here, in one line
    db = database(args) if args.db else None
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is out of range; write 0 to 65535")
    app = create_app(keys_file=keys, db_path=db, own_process=True)
    handler = logging.StreamHandler()  # what serves, each switch, a snapshot that won't open
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logging.getLogger("ragmart.serve").addHandler(handler)
    logging.getLogger("ragmart.serve").setLevel(logging.INFO)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return Exit.OK


def run_keys(args: argparse.Namespace) -> int:
    from ragmart.http.keys import KeyRing, check_name, keys_path

    path = keys_path(args.keys)
    ring = KeyRing.load(path, missing_ok=args.action == "add")
    if args.action == "list":
        for key in ring.keys:
            access = "ALL GROUPS" if key.all_groups else ",".join(key.groups) or "(no group)"
            print(f"{key.name}\t{access}\t{key.created_at or ''}")
        return Exit.OK
    if args.action == "remove":
        ring.remove(args.name).save()
        print(f"removed key {args.name!r} from {path}")
        return Exit.OK
    groups = [g.strip() for g in (args.groups or "").split(",") if g.strip()]
    if not args.all_groups and not groups:
        raise ValueError("--groups names no group; write e.g. --groups hr,managers")
    updated, key = ring.add(check_name(args.name), groups, all_groups=args.all_groups)
    updated.save()
    print(key)
    access = "every document (operator)" if args.all_groups else ", ".join(groups)
    import sys

    print(f"ragmart keys: added {args.name!r} ({access}) to {path}; the key is shown once, "
          "only its SHA-256 is stored", file=sys.stderr)
    return Exit.OK
