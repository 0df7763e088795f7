"""Offline retrieval quality on the judged query set (seeds/judged_queries.csv)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

JUDGED_QUERIES = Path("seeds/judged_queries.csv")


@dataclass(frozen=True)
class JudgedQuery:
    query_id: str
    question: str
    relevant_document_ids: frozenset[str]


@dataclass(frozen=True)
class EvalReport:
    queries: int
    k: int
    recall_at_k: float
    mrr: float
    per_query: list[dict]


def load_judged_queries(path: str | Path = JUDGED_QUERIES) -> list[JudgedQuery]:
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


def ranked_documents(chunk_document_ids: Sequence[str]) -> list[str]:
    """Distinct documents in the order their first chunk was retrieved."""
    return list(dict.fromkeys(chunk_document_ids))


def evaluate(
    queries: Sequence[JudgedQuery],
    search: Callable[[str], Sequence[str]],
    *,
    k: int = 5,
) -> EvalReport:
    """`search(question)` returns the document ids of retrieved chunks, best first.

    recall@k: share of a query's relevant documents among the first k distinct documents,
    averaged over queries. MRR: mean of 1/rank of the first relevant document (0 if none)."""
    per_query = []
    for query in queries:
        documents = ranked_documents(search(query.question))
        top = documents[:k]
        recall = len(query.relevant_document_ids.intersection(top)) / len(
            query.relevant_document_ids
        )
        first = next(
            (i for i, d in enumerate(documents, 1) if d in query.relevant_document_ids), None
        )
        per_query.append(
            {
                "query_id": query.query_id,
                "recall": recall,
                "reciprocal_rank": 1.0 / first if first else 0.0,
                "top_documents": top,
            }
        )
    n = len(per_query) or 1
    return EvalReport(
        queries=len(per_query),
        k=k,
        recall_at_k=sum(q["recall"] for q in per_query) / n,
        mrr=sum(q["reciprocal_rank"] for q in per_query) / n,
        per_query=per_query,
    )
