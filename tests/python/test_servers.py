"""The servers the suite starts for itself: PostgreSQL with pgvector, and S3 (moto)."""

from __future__ import annotations

import duckdb
import psycopg

from ragmart.duck import load_extension


def test_postgres_fixture_has_pgvector_with_iterative_hnsw_scans(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("create extension vector")
        version = conn.execute(
            "select extversion from pg_extension where extname = 'vector'").fetchone()[0]
        conn.execute("create table t (id int primary key, tag int, v vector(3))")
        conn.execute("insert into t select i, i % 100, array[random(), random(), random()]::vector"
                     " from generate_series(1, 2000) as i")
        conn.execute("create index on t using hnsw (v vector_cosine_ops)")
        conn.execute("set hnsw.iterative_scan = strict_order")
        rows = conn.execute("select id from t where tag = 7 order by v <=> '[1,0,0]' limit 10"
                            ).fetchall()
    assert tuple(int(p) for p in version.split(".")) >= (0, 8, 0)
    assert len(rows) == 10  # 1% selective filter, still k rows


def test_s3_fixture_serves_duckdb_httpfs(s3_server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="landing/a.csv", Body=b"x,y\n1,2\n")
    conn = duckdb.connect()
    load_extension(conn, "httpfs")
    conn.execute(
        "create secret (type s3, key_id $k, secret $s, endpoint $e, url_style 'path', "
        "use_ssl false, region $r)",
        {"k": s3_server.access_key_id, "s": s3_server.secret_access_key,
         "e": s3_server.endpoint, "r": s3_server.region})
    files = conn.execute(f"select file from glob('s3://{s3_bucket}/landing/*.csv')").fetchall()
    total = conn.execute(f"select sum(y) from read_csv('s3://{s3_bucket}/landing/a.csv')"
                         ).fetchone()[0]
    assert files == [(f"s3://{s3_bucket}/landing/a.csv",)]
    assert total == 2
