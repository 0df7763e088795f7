"""The judged query set (seeds/judged_queries.csv) and the question vectors dbt caches.

Each judged question names the documents relevant to it. ``ragmart eval`` and ``ragmart
publish`` read the seed from the dbt project; the Python model ``int_judged_query_embeddings``
embeds each question once per embedding model and question text (:func:`question_hash`, the
same sha256 DuckDB computes), so fct_retrieval_eval re-embeds only edited questions.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ragmart.embedding.providers import EmbeddingProvider
from ragmart.lineage import current_invocation_id, utc_now

JUDGED_QUERIES = Path("seeds/judged_queries.csv")


@dataclass(frozen=True)
class JudgedQuery:
    query_id: str
    question: str
    relevant_document_ids: frozenset[str]


def judged_queries_path() -> Path:
    """The dbt project's seed of judged queries: JUDGED_QUERIES in the working directory, else
    under $DBT_PROJECT_DIR. Publish, rollback and purge evaluate with it, so they work from any
    directory once DBT_PROJECT_DIR names the project."""
    if JUDGED_QUERIES.is_file():
        return JUDGED_QUERIES
    project = os.environ.get("DBT_PROJECT_DIR", "").strip()
    if project and (Path(project) / JUDGED_QUERIES).is_file():
        return Path(project) / JUDGED_QUERIES
    elsewhere = f" nor under DBT_PROJECT_DIR={project}" if project else ""
    raise FileNotFoundError(
        f"the judged queries {JUDGED_QUERIES} are not in the working directory {Path.cwd()}"
        f"{elsewhere}; run ragmart from the dbt project directory or set DBT_PROJECT_DIR to it "
        "(ragmart eval also takes --queries FILE)"
    )


def load_judged_queries(path: str | Path | None = None) -> list[JudgedQuery]:
    """The judged queries of the CSV `path` (default: judged_queries_path())."""
    path = judged_queries_path() if path is None else path
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    queries = []
    for row in rows:
        ids = row["relevant_document_ids"].split(";")
        relevant = frozenset(x.strip() for x in ids if x.strip())
        if not relevant:
            raise ValueError(f"{path}: query {row['query_id']} has no relevant_document_ids")
        queries.append(JudgedQuery(row["query_id"], row["question"], relevant))
    return queries


def question_hash(question: str) -> str:
    """sha256 of the question text (hex), as DuckDB's ``sha256(question)``."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


QUESTION_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("question", pa.string()),
        ("question_hash", pa.string()),
        ("embedding_model", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("created_at", pa.timestamp("us")),
        ("dbt_invocation_id", pa.string()),
    ]
)


def embed_judged_questions(
    questions: Sequence[tuple[str, str]],
    provider: EmbeddingProvider,
    *,
    cached: Iterable[tuple[str, str]] = (),
) -> pa.Table:
    """QUESTION_SCHEMA rows for (query_id, question) pairs whose (query_id, question_hash) is
    not in `cached` for this provider's model, in query_id order."""
    skip = set(cached)
    todo = sorted({(qid, q) for qid, q in questions if (qid, question_hash(q)) not in skip})
    matrix = (provider.embed([q for _, q in todo]) if todo
              else np.zeros((0, provider.dimensions), np.float32))
    created_at = utc_now()
    invocation_id = current_invocation_id()
    return pa.table(
        {
            "query_id": [qid for qid, _ in todo],
            "question": [q for _, q in todo],
            "question_hash": [question_hash(q) for _, q in todo],
            "embedding_model": [provider.model] * len(todo),
            "embedding": [np.asarray(row, dtype=np.float32).tolist() for row in matrix],
            "created_at": [created_at] * len(todo),
            "dbt_invocation_id": [invocation_id] * len(todo),
        },
        schema=QUESTION_SCHEMA,
    )


