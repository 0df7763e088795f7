"""List-and-read cost of the landing zone at 10,000 objects: a build after every object was
read, with 10 new ones landed, against a build that reads them all.

Runs ingestion in this process exactly as the dbt model stg_landing__document_events calls it
(ragmart.ingest.landing: list the zone, skip what was read, read and parse the rest) over:

  - an S3 landing zone on a local moto server (``s3://bench/landing``), and
  - a local folder with the same files (the baseline ragmart had before S3).

For each: "all" = the first build (nothing read yet: lists N objects, reads N); "incremental" =
the next build after 10 new objects landed (lists N + 10, reads 10). Prints seconds (listing and
reading apart), GetObject requests, and the ratio all / incremental.

    .venv/bin/python bench/landing.py [--objects 10000] [--new 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragmart.ingest.landing import ingest_files, list_landing_files  # noqa: E402

HEADER = "Op,commit_ts,change_seq,document_id,document_type,title,content,updated_at"


def cdc_file(i: int) -> bytes:
    return (f"{HEADER}\nI,2026-11-02 09:00:00,{i},doc-{i},policy,Doc {i},"
            f"Body of document {i},2026-11-02 09:00:00\n").encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(landing: str, seen: tuple[set, set, set]) -> tuple[float, float, int, list[dict]]:
    """One ingestion: (list seconds, read+parse seconds, GetObject requests, rows)."""
    started = time.perf_counter()
    files = list_landing_files(landing)
    listed = time.perf_counter()
    gets = [0]
    store = files[0].store if files else None
    client = getattr(store, "client", None)
    if client is not None:
        def count(**_: object) -> None:
            gets[0] += 1
        client.meta.events.register("before-call.s3.GetObject", count)
    table = ingest_files(files, seen_keys=seen[0], seen_hashes=seen[1], seen_etags=seen[2],
                         max_content_bytes=1_000_000)
    done = time.perf_counter()
    if client is None:  # a local folder: every file not skipped is read
        gets[0] = len({r["source_file"] for r in table.to_pylist()})
    return listed - started, done - listed, gets[0], table.to_pylist()


def remember(rows: list[dict], seen: tuple[set, set, set]) -> None:
    """What the model reads back from its own table before the next build."""
    for r in rows:
        seen[0].add((r["source_file"], r["file_size"], r["file_modified_at"]))
        seen[1].add((r["source_file"], r["file_sha256"]))
        if r["file_etag"]:
            seen[2].add((r["source_file"], r["file_size"], r["file_etag"]))


def measure(name: str, landing: str, put, objects: int, new: int) -> dict:
    seen: tuple[set, set, set] = (set(), set(), set())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put(f"dms/{i:06d}.csv", cdc_file(i)), range(objects)))
    first = build(landing, seen)
    remember(first[3], seen)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put(f"dms/{i:06d}.csv", cdc_file(i)),
                      range(objects, objects + new)))
    second = build(landing, seen)
    assert len(first[3]) == objects and len(second[3]) == new, (len(first[3]), len(second[3]))
    total = [first[0] + first[1], second[0] + second[1]]
    print(f"{name}: all {objects}: list {first[0]:.2f} s + read {first[1]:.2f} s = "
          f"{total[0]:.2f} s, {first[2]} GETs | incremental (+{new}): list {second[0]:.2f} s + "
          f"read {second[1]:.3f} s = {total[1]:.2f} s, {second[2]} GETs | all/incremental "
          f"{total[0] / total[1]:.1f}x (reads {first[1] / max(second[1], 1e-9):.0f}x)",
          flush=True)
    return {"all": total[0], "incremental": total[1], "list": second[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        os.environ.update({
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1", "RAGMART_S3_ENDPOINT": f"127.0.0.1:{port}",
            "RAGMART_S3_URL_STYLE": "path", "RAGMART_S3_USE_SSL": "false"})
        from ragmart.ingest.s3_settings import S3Settings

        client = S3Settings.from_env().client()
        client.create_bucket(Bucket="bench")
        print(f"landing zone with {args.objects} one-record DMS objects, then {args.new} more "
              f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)", flush=True)
        s3 = measure("s3   ", "s3://bench/landing",
                     lambda key, data: client.put_object(
                         Bucket="bench", Key=f"landing/{key}", Body=data),
                     args.objects, args.new)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "landing"
            (folder / "dms").mkdir(parents=True)

            def put_local(key: str, data: bytes) -> None:
                (folder / key).write_bytes(data)

            local = measure("local", str(folder), put_local, args.objects, args.new)
        print(f"s3 incremental build vs local folder incremental: "
              f"{s3['incremental'] / local['incremental']:.1f}x; of the S3 incremental build, "
              f"listing {args.objects + args.new} objects is "
              f"{100 * s3['list'] / s3['incremental']:.0f}%")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
