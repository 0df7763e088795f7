"""The model a provider embeds with, and its vector size, as a DuckDB function for dbt.

The one source of "which model, at which size, does provider X embed with" is the provider
(``ragmart.embedding.providers``: each provider's ``model`` and ``dimensions``, from its
settings). dbt needs the same answer while it compiles: the serving set selects vectors by model
name, an index version is typed ``float[<dimensions>]`` and bound to both in ``index_versions``.
So the dbt-duckdb plugin (``ragmart.build.dbt_plugin``) registers ``ragmart_embedding_model``
on dbt's connection and the macro ``provider_embedding_model`` calls it, instead of deriving
the names a second time in Jinja.
"""

from __future__ import annotations

from typing import Any

import duckdb
from duckdb.sqltypes import INTEGER, VARCHAR

from ragmart.embedding.providers import get_provider

FUNCTION = "ragmart_embedding_model"
RESULT = duckdb.struct_type({"model": VARCHAR, "dimensions": INTEGER, "error": VARCHAR})


def embedding_model_of(provider: str) -> dict[str, Any]:
    """{model, dimensions, error}: what the provider named `provider` embeds with under this
    process's settings, or, for a bad name or setting, the provider's error naming it. Nothing
    is loaded and no key is read."""
    try:
        chosen = get_provider(provider)
    except (TypeError, ValueError) as exc:
        return {"model": None, "dimensions": None, "error": str(exc)}
    return {"model": chosen.model, "dimensions": chosen.dimensions, "error": None}


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Make ``ragmart_embedding_model(provider varchar)`` callable on `conn` and its cursors."""
    conn.create_function(FUNCTION, embedding_model_of, [VARCHAR], RESULT)
