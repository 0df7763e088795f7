"""The names of the relations ragmart reads and writes, and the rule for an index version.

The only place Python names a dbt relation (or a table ragmart creates beside dbt's) or decides
whether a string is an index version. It imports nothing else from ragmart, so every module may
import it. The dbt side names the same relations in its models and macros; the dbt var
``index_version`` is checked by macros/validate_settings.sql against the same pattern (a test
compares the two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An index version vN names one set of relations (fct_chunk_embeddings_vN, ...).
INDEX_VERSION = re.compile(r"v[0-9]+", re.ASCII)
DEFAULT_VERSION = "v1"

# Per index version <v>: the serving set, its HNSW index, the vectors not indexed yet (searched
# exactly beside the index), the history for as-of search, the served document versions (the
# freshness facts) and the retrieval table macro.
SERVING_PREFIX = "fct_chunk_embeddings_"
INDEX_PREFIX = "fct_chunk_vector_index_"
DELTA_PREFIX = "fct_chunk_vector_delta_"
HISTORY_PREFIX = "fct_chunk_history_"
SERVED_VERSIONS_PREFIX = "int_document_versions_served_"
SQL_MACRO_PREFIX = "ragmart_retrieve_"

# One relation each, whatever the version.
LANDED_TABLE = "stg_landing__document_events"  # every reading of every landed file
DOCUMENT_VERSIONS_TABLE = "int_document_versions"
DOCUMENTS_TABLE = "dim_documents"
ACCESS_TABLE = "dim_document_access"  # the latest known allowed_groups, deleted documents too
QUARANTINE_TABLE = "fct_quarantined_events"
INDEX_VERSIONS_TABLE = "index_versions"  # version -> chunker, model, dimensions (dbt hook)
RUNS_TABLE = "embedding_runs"  # one row per embedding run (the ledger)
PENDING_TABLE = "embedding_cache_pending"  # vectors obtained and not yet in the cache
PUBLISHED_METRICS_TABLE = "published_eval_metrics"  # the gate's baseline
MARKS_TABLE = "published_snapshot_marks"  # one row in every snapshot: what it was taken from


class InvalidVersionError(ValueError):
    """A string that is not an index version (v1, v2, ...)."""


def check_version(version: object) -> str:
    """`version` when it is an index version; InvalidVersionError otherwise."""
    if not isinstance(version, str) or not INDEX_VERSION.fullmatch(version):
        raise InvalidVersionError(f"invalid index version {version!r}: write it as v1, v2, ...")
    return version


def version_of(serving_table: str) -> str | None:
    """The index version whose serving table is `serving_table`, or None."""
    version = serving_table.removeprefix(SERVING_PREFIX)
    if version == serving_table or not INDEX_VERSION.fullmatch(version):
        return None
    return version


@dataclass(frozen=True)
class Relations:
    """The relations of one index version (trusted identifiers, never caller input)."""

    version: str

    def __post_init__(self) -> None:
        check_version(self.version)

    @property
    def serving(self) -> str:
        return SERVING_PREFIX + self.version

    @property
    def index(self) -> str:
        return INDEX_PREFIX + self.version

    @property
    def delta(self) -> str:
        return DELTA_PREFIX + self.version

    @property
    def history(self) -> str:
        return HISTORY_PREFIX + self.version

    @property
    def served_versions(self) -> str:
        return SERVED_VERSIONS_PREFIX + self.version

    @property
    def macro(self) -> str:
        return SQL_MACRO_PREFIX + self.version

# Added by the CLI split (issue 14): the valid CDC events of both layouts, one typed stream.
EVENTS_TABLE = "stg_cdc__document_events"

# Added by hybrid retrieval (issue 16): the schema DuckDB's fts extension writes the full-text
# index of main.<table> to (ragmart.serving.lexical_index).
LEXICAL_SCHEMA_PREFIX = "fts_main_"

# Added by lexical search on PostgreSQL (issues 15/16): the BM25 statistics a publication of
# version vN carries to the serving database (ragmart.serving.postgres.lexical): one term bag
# per chunk, the full-text index's document frequencies, and its document count and length.
LEXICAL_CHUNKS_PREFIX = "lexical_chunks_"
LEXICAL_TERMS_PREFIX = "lexical_terms_"
LEXICAL_STATS_PREFIX = "lexical_stats_"

# Added by lexical search in memory (issue 16): the view a Retriever's connection registers for
# one ranking statement, the index's postings of the question's terms in the candidates
# (ragmart.retrieval.memory_lexical).
LEXICAL_MATCHES_VIEW = "ragmart_lexical_matches"
