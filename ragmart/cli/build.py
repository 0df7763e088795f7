"""`ragmart build [--watch] [--publish] [-- DBT_ARGS]`: the production dbt build, kept warm."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence

from ragmart.cli.arguments import add_db, count, database, positive
from ragmart.exit_codes import Exit

# the dbt test that is the evaluation gate of a build (tests/dbt/)
GATE_TEST = "assert_candidate_does_not_regress"
PUBLISH_ENV = "RAGMART_BUILD_PUBLISH"  # true: `ragmart build` publishes as with --publish


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="dbt build in a warm process; --watch: again whenever files land",
        description="Run the production dbt build (unit tests excluded) with dbt imported and "
                    "the project parsed once per process. With --watch, build now and again "
                    "whenever a file lands in the landing zone: each build costs its nodes, "
                    "not dbt's ~6 s start-up. dbt arguments go after --.")
    p.add_argument("--watch", action="store_true", help="keep building as files land")
    p.add_argument("--interval", type=positive, default=5.0, metavar="S",
                   help="seconds between looks at the landing zone (default 5)")
    p.add_argument("--max-builds", type=count, metavar="N", help="stop after N builds")
    add_db(p, "database file the build writes")
    p.add_argument("--publish", action="store_true",
                   help=f"after every green build, publish the built version through the "
                        f"evaluation gate (as `ragmart publish`); a refused or failed publish "
                        f"keeps the previous snapshot serving and is retried after the next "
                        f"build (default ${PUBLISH_ENV})")
    p.add_argument("dbt_args", nargs=argparse.REMAINDER,
                   help="arguments passed to dbt build, after --")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # profiles.yml attaches $RAGMART_DB: dbt reads it in this process, so --db is set there
    db = str(database(args, must_exist=False).resolve()) if args.db else None
    with _environ("RAGMART_DB", db):
        return _build(args)


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """$name set to `value` (when not None) for the block; an in-process caller gets its
    environment back."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _build(args: argparse.Namespace) -> int:
    from ragmart.build.runner import WarmDbt, then_publish, watch
    from ragmart.config import Settings

    dbt_args = args.dbt_args[1:] if args.dbt_args[:1] == ["--"] else args.dbt_args
    build = WarmDbt(dbt_args=dbt_args).build
    if _publish_on_build(args.publish):
        from ragmart.serving.publish import publish_after_build

        db_path, version = Settings.from_env().db_path, _built_version(dbt_args)
        build = then_publish(build, lambda: publish_after_build(db_path, version))

    def report(n: int, outcome) -> None:
        print(f"ragmart build #{n}: {outcome.summary()}", flush=True)

    if not args.watch:
        outcome = build()
        report(1, outcome)
        return _build_exit(outcome)
    landing = Settings.from_env().landing_dir
    print(f"ragmart build: watching {landing} every {args.interval:g}s (Ctrl-C stops)", flush=True)
    try:
        last = watch(build, landing, interval=args.interval, max_builds=args.max_builds,
                     report=report)
    except KeyboardInterrupt:
        return Exit.OK
    return _build_exit(last)


def _build_exit(outcome) -> Exit:
    """OK; GATE_REFUSED when the evaluation gate is the only node that failed (the build is
    sound, the candidate retrieves worse than what serves) or refused its publish; else
    CHECK_FAILED (a failed node, or a publish that failed)."""
    if outcome is not None and outcome.success and outcome.published is not None:
        return {"published": Exit.OK, "refused": Exit.GATE_REFUSED}.get(
            outcome.published.outcome, Exit.CHECK_FAILED)
    if outcome is None or outcome.success:
        return Exit.OK
    failed = [f.split(":", 1)[0] for f in outcome.failures]
    if failed and all(node.startswith("test.") and node.split(".")[-1] == GATE_TEST
                      for node in failed):
        return Exit.GATE_REFUSED
    return Exit.CHECK_FAILED


def _built_version(dbt_args: Sequence[str]) -> str:
    """The index version a build with these dbt arguments builds: --vars index_version, else
    the project's default (v1)."""
    import yaml

    from ragmart.relations import DEFAULT_VERSION, check_version

    for i, arg in enumerate(dbt_args):
        text = dbt_args[i + 1] if arg == "--vars" and i + 1 < len(dbt_args) else (
            arg.removeprefix("--vars=") if arg.startswith("--vars=") else None)
        if text is not None:
            try:
                given = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"--vars {text!r} is not YAML: {exc}") from None
            if isinstance(given, dict) and given.get("index_version"):
                return check_version(str(given["index_version"]))
    return DEFAULT_VERSION


def _publish_on_build(flag: bool) -> bool:
    """--publish, or $RAGMART_BUILD_PUBLISH true."""
    value = os.environ.get(PUBLISH_ENV, "").strip().lower()
    if value not in ("", "true", "1", "yes", "on", "false", "0", "no", "off"):
        raise ValueError(f"{PUBLISH_ENV}={value!r} is not a boolean; write true or false")
    return flag or value in ("true", "1", "yes", "on")
