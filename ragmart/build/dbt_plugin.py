"""dbt-duckdb plugin: the one place where ragmart prepares a DuckDB connection.

Loads the vss extension from the installed ``duckdb-extension-vss`` wheel (never from the
network) and enables HNSW persistence for file databases. Before dbt opens the database it
completes any purge left pending (``ragmart.serving.purge``). Profiles reference it as::

    plugins:
      - module: ragmart.build.dbt_plugin
        alias: ragmart
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ragmart.duck import configure_connection
from ragmart.quality import embedding_lag
from ragmart.serving import vector_index


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._config = dict(plugin_config)
        # A purge interrupted since the last invocation (ragmart.serving.purge's journal) is
        # completed
        # before dbt opens the database: a file stat when there is none.
        from ragmart.serving.purge import Deployment, complete_pending, journal_path

        deployment = Deployment.from_env()
        if journal_path(deployment.db_path).exists():
            complete_pending(deployment)

    def configure_connection(self, conn: Any) -> None:
        configure_connection(conn)
        vector_index.register(conn)
        embedding_lag.register(conn)
