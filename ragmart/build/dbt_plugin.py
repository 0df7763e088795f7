"""dbt-duckdb plugin: the one place where ragmart prepares dbt's DuckDB connection.

Loads the vss extension from the installed ``duckdb-extension-vss`` wheel (never from the
network), enables HNSW persistence for file databases (``ragmart.duck``), and registers the
DuckDB functions through which dbt's macros and tests use a rule that Python owns, so that it
is written once:

- ``ragmart_embedding_model``: the provider's model name and vector size
  (``ragmart.embedding.model_function``);
- ``ragmart_gate_tolerance`` / ``ragmart_gate_regressed``: the evaluation gate
  (``ragmart.quality.gate``, for the test assert_candidate_does_not_regress);
- ``ragmart_hnsw_index_sql``: the HNSW index statement (``ragmart.serving.vector_index``);
- ``ragmart_fts_index_sql``: the full-text index statement (``ragmart.serving.lexical_index``,
  which loads fts too);
- ``ragmart_embedding_sla_lag_seconds``: the embedding-lag SLA
  (``ragmart.quality.embedding_lag``, for assert_embedding_lag_within_sla and freshness).

When the landing zone (RAGMART_LANDING_DIR) is ``s3://``, it loads httpfs and creates a temporary
S3 secret from the environment (``ragmart.ingest.s3_settings``), for the landing sources'
read_blob (``dbt source freshness``).

Before dbt opens the database it completes any purge left pending (``ragmart.serving.purge``).
Profiles reference it as::

    plugins:
      - module: ragmart.build.dbt_plugin
        alias: ragmart
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ragmart.duck import configure_connection
from ragmart.embedding import model_function
from ragmart.quality import embedding_lag, gate
from ragmart.serving import lexical_index, vector_index


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # A purge interrupted since the last invocation (ragmart.serving.purge's journal) is
        # completed before dbt opens the database: a file stat when there is none.
        from ragmart.serving.purge.deployment import Deployment
        from ragmart.serving.purge.journal import journal_path
        from ragmart.serving.purge.run import complete_pending

        deployment = Deployment.from_env()
        if journal_path(deployment.db_path).exists():
            complete_pending(deployment)

    def configure_connection(self, conn: Any) -> None:
        configure_connection(conn)
        model_function.register(conn)
        gate.register(conn)
        vector_index.register(conn)
        lexical_index.register(conn)
        embedding_lag.register(conn)
        from ragmart.config import Settings
        from ragmart.ingest.store import is_s3_url

        if is_s3_url(Settings.from_env().landing_dir):
            from ragmart.ingest.s3_settings import configure_duckdb

            configure_duckdb(conn)
