"""dbt-duckdb plugin: the one place where ragmart prepares dbt's DuckDB connection.

Loads the vss extension from the installed ``duckdb-extension-vss`` wheel (never from the
network), enables HNSW persistence for file databases (``ragmart.duck``), and registers the
function ``ragmart_embedding_model`` that the macros ask for the provider's model and vector
size (``ragmart.embedding.model_function``) and the gate's tolerance and comparison that the
dbt test assert_candidate_does_not_regress calls (``ragmart.quality.gate``). Before dbt opens
the database it completes any purge left pending (``ragmart.serving.purge``). Profiles reference it as::

    plugins:
      - module: ragmart.build.dbt_plugin
        alias: ragmart
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ragmart.duck import configure_connection
from ragmart.embedding import model_function
from ragmart.quality import gate


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
