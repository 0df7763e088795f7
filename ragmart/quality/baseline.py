"""The gate's baseline in the build database: the metrics of what serves.

``ragmart publish``, ``rollback`` and a purge (ragmart.serving.baseline) append the serving
version's overall metrics here; the dbt test ``assert_candidate_does_not_regress`` takes the
latest value per metric as its baseline when the var ``eval_baseline`` is not given.
"""

from __future__ import annotations

import duckdb

from ragmart.lineage import utc_now
from ragmart.quality.metrics import EvalReport
from ragmart.relations import PUBLISHED_METRICS_TABLE


def record_published_metrics(conn: duckdb.DuckDBPyConnection, report: EvalReport) -> None:
    """Append `report`'s overall metrics to PUBLISHED_METRICS_TABLE (one row per metric, dbt
    names, one publish_seq per call): the baseline of assert_candidate_does_not_regress when the
    var eval_baseline is not given."""
    conn.execute(
        f"""
        create table if not exists {PUBLISHED_METRICS_TABLE} (
            publish_seq bigint not null,
            version varchar,
            metric varchar not null,
            metric_value double not null,
            embedding_model varchar,
            queries integer,
            published_at timestamp not null
        )
        """
    )
    seq = conn.execute(
        f"select coalesce(max(publish_seq), 0) + 1 from {PUBLISHED_METRICS_TABLE}"
    ).fetchone()[0]
    published_at = utc_now()
    for metric, value in report.dbt_vars().items():
        conn.execute(
            f"insert into {PUBLISHED_METRICS_TABLE} values (?, ?, ?, ?, ?, ?, ?)",
            [seq, report.version, metric, float(value), report.embedding_model,
             report.queries, published_at],
        )
