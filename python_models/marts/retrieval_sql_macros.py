"""The SQL path of retrieval: installs the DuckDB table macro `ragmart_retrieve_<index_version>`.

Thin wrapper around ragmart.retrieval.macro.install_sql_macros (the macro is rendered from the
same clause objects and SQL template as the Python path). Runs after the tables the macro reads
(DuckDB binds them when the macro is created); returns one row per ragmart_retrieve_<v> macro
in the database, with its signature, so the database documents what it offers.
"""


def model(dbt, session):
    dbt.config(materialized="table")
    from ragmart.retrieval.macro import (
        embedding_dimensions,
        install_sql_macros,
        sql_macro_catalog,
    )
    from ragmart.retrieval.sql import Tables

    # the macro reads these relations: build them first. Its query vector has the size of the
    # version's vectors (its model's), read from the serving set's column
    serving = dbt.ref("fct_chunk_embeddings")
    dbt.ref("fct_chunk_history")
    dbt.ref("fct_chunk_vector_index")
    dbt.ref("dim_documents")
    dbt.ref("dim_document_access")
    dims = embedding_dimensions(serving)
    tables = Tables.for_version(str(dbt.config.get("index_version")))
    previous = session.execute("select current_database(), current_schema()").fetchone()
    session.execute(f'use "{dbt.this.database}"."{dbt.this.schema}"')
    try:
        install_sql_macros(session, dims, tables)
        catalog = sql_macro_catalog(session)
    finally:
        session.execute(f'use "{previous[0]}"."{previous[1]}"')
    return catalog
