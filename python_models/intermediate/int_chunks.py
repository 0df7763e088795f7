"""Chunks of every document version that is not a delete, for the configured chunker_version.

Thin wrapper around ragmart.chunking.versions.chunk_versions. Incremental (append): a version
is chunked once. Superseded versions are chunked too (as-of retrieval searches them,
fct_chunk_history_v1); their unchanged paragraphs share chunk_hash with other versions, so the
embedding cache sends only texts no version had. The serving marts select the live versions.
"""


def model(dbt, session):
    dbt.config(materialized="incremental", incremental_strategy="append")
    from ragmart.chunking.versions import chunk_versions, get_chunker

    chunker_version = str(dbt.config.get("chunker_version"))
    get_chunker(chunker_version)  # fail fast, naming the known chunkers

    versions = dbt.ref("int_document_versions")  # noqa: F841 - read by the SQL below
    pending_sql = """
        select document_id, document_version, document_checksum, title, content
        from versions
        where not is_deleted
    """
    if dbt.is_incremental:
        chunked = session.sql(  # noqa: F841 - read by the SQL below
            f"select distinct document_id, document_version from {dbt.this} "
            "where chunker_version = $chunker_version",
            params={"chunker_version": chunker_version},
        )
        pending_sql += """
            and not exists (
                select 1 from chunked
                where chunked.document_id = versions.document_id
                  and chunked.document_version = versions.document_version
            )
        """
    pending = session.sql(pending_sql + " order by document_id, document_version")
    return chunk_versions(pending.to_arrow_table(), chunker_version)
