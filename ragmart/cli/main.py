"""The `ragmart` command: retrieve, freshness, eval, stats, build, and the serving commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ragmart.cli import build, postgres, quality, retrieve, serving, sql
from ragmart.cli.arguments import Parser
from ragmart.cli.errors import report


def build_parser() -> argparse.ArgumentParser:
    """Every command's arguments; each command module imports what it runs only when run."""
    parser = Parser(prog="ragmart", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (retrieve, quality, build, serving, sql, postgres):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code is one of ragmart.exit_codes.Exit (argparse's own usage
    errors exit 2, Exit.USAGE, too). Every failure is one line on stderr (ragmart.cli.errors)."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe fails here, inside the command, not at exit
        return code
    except Exception as exc:  # every failure becomes one clear line and an exit code
        return report(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
