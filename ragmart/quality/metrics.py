"""Retrieval metrics at document level, per judged question and averaged.

The retrieved chunks are reduced to distinct documents in the order of their best chunk
(``ranked_documents``), then, per judged question,

* recall@k = |relevant ∩ top-k documents| / |relevant|,
* reciprocal rank = 1 / rank of the first relevant document (0 when none is ranked),
* nDCG@10 with binary relevance and a log2 discount; the ideal ranks every relevant document
  first (cut at 10),

averaged over the questions, overall and per document type (a question's types are those of
its relevant documents in the serving table; a question counts under each of them). The dbt
model ``fct_retrieval_eval`` computes the same numbers in SQL (a test compares them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from ragmart.quality.judged import JudgedQuery

NDCG_DEPTH = 10
# The bucket of questions none of whose relevant documents is served with a document_type.
UNKNOWN_TYPE = "(unknown)"


@dataclass(frozen=True)
class QueryResult:
    query_id: str
    recall: float
    reciprocal_rank: float
    ndcg: float
    first_relevant_rank: int | None
    top_documents: list[str]
    document_types: tuple[str, ...] = ()
    relevant_document_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "document_types": list(self.document_types),
                "relevant_document_ids": list(self.relevant_document_ids)}


@dataclass(frozen=True)
class Metrics:
    queries: int
    recall_at_k: float
    mrr: float
    ndcg_at_10: float


@dataclass(frozen=True)
class EvalReport:
    k: int
    overall: Metrics
    by_document_type: dict[str, Metrics] = field(default_factory=dict)
    per_query: list[QueryResult] = field(default_factory=list)
    version: str | None = None
    embedding_model: str | None = None

    @property
    def queries(self) -> int:
        return self.overall.queries

    def metrics(self) -> dict[str, float]:
        """The overall metrics by name: ``recall@<k>``, ``mrr``, ``ndcg@10``."""
        return _named(self.overall, self.k)

    def dbt_vars(self) -> dict[str, float]:
        """The overall metrics as the dbt var ``eval_baseline`` takes them."""
        return {name.replace("@", "_at_"): value for name, value in self.metrics().items()}

    def to_dict(self, *, per_query: bool = False) -> dict:
        data: dict = {
            "version": self.version,
            "embedding_model": self.embedding_model,
            "k": self.k,
            "queries": self.queries,
            "metrics": self.metrics(),
            "by_document_type": {
                name: {"queries": m.queries, **_named(m, self.k)}
                for name, m in self.by_document_type.items()
            },
        }
        if per_query:
            data["per_query"] = [q.to_dict() for q in self.per_query]
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> EvalReport:
        """The report `to_dict` wrote (per-query results are kept when present)."""
        k = int(data["k"])

        def metrics(values: Mapping, queries: int) -> Metrics:
            return Metrics(queries, float(values[f"recall@{k}"]), float(values["mrr"]),
                           float(values["ndcg@10"]))

        return cls(
            k=k,
            overall=metrics(data["metrics"], int(data["queries"])),
            by_document_type={
                name: metrics(values, int(values["queries"]))
                for name, values in data.get("by_document_type", {}).items()
            },
            per_query=[
                QueryResult(**{
                    **q,
                    "document_types": tuple(q.get("document_types", ())),
                    "relevant_document_ids": tuple(q.get("relevant_document_ids", ())),
                })
                for q in data.get("per_query", [])
            ],
            version=data.get("version"),
            embedding_model=data.get("embedding_model"),
        )


def _named(metrics: Metrics, k: int) -> dict[str, float]:
    return {f"recall@{k}": metrics.recall_at_k, "mrr": metrics.mrr,
            f"ndcg@{NDCG_DEPTH}": metrics.ndcg_at_10}


def ranked_documents(chunk_document_ids: Sequence[str]) -> list[str]:
    """Distinct documents in the order their first (best) chunk was retrieved."""
    return list(dict.fromkeys(chunk_document_ids))


def recall_at_k(documents: Sequence[str], relevant: frozenset[str], k: int) -> float:
    return len(relevant.intersection(documents[:k])) / len(relevant)


def _first_relevant_rank(documents: Sequence[str], relevant: frozenset[str]) -> int | None:
    return next((rank for rank, d in enumerate(documents, 1) if d in relevant), None)


def reciprocal_rank(documents: Sequence[str], relevant: frozenset[str]) -> float:
    first = _first_relevant_rank(documents, relevant)
    return 1.0 / first if first else 0.0


def ndcg_at_k(documents: Sequence[str], relevant: frozenset[str], k: int = NDCG_DEPTH) -> float:
    dcg = sum(1.0 / math.log2(rank + 1)
              for rank, d in enumerate(documents[:k], 1) if d in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def _average(results: Sequence[QueryResult]) -> Metrics:
    n = len(results)
    if not n:
        return Metrics(0, 0.0, 0.0, 0.0)
    return Metrics(
        queries=n,
        recall_at_k=sum(q.recall for q in results) / n,
        mrr=sum(q.reciprocal_rank for q in results) / n,
        ndcg_at_10=sum(q.ndcg for q in results) / n,
    )


def evaluate(
    queries: Sequence[JudgedQuery],
    search: Callable[[str], Sequence[str]],
    *,
    k: int = 5,
    document_types: Mapping[str, str | None] | None = None,
    version: str | None = None,
    embedding_model: str | None = None,
) -> EvalReport:
    """`search(question)` returns the document ids of retrieved chunks, best first.

    `document_types` maps the served document ids to their type (for the per-type metrics)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    types = document_types or {}
    per_query = []
    for query in queries:
        documents = ranked_documents(search(query.question))
        relevant = query.relevant_document_ids
        per_query.append(
            QueryResult(
                query_id=query.query_id,
                recall=recall_at_k(documents, relevant, k),
                reciprocal_rank=reciprocal_rank(documents, relevant),
                ndcg=ndcg_at_k(documents, relevant),
                first_relevant_rank=_first_relevant_rank(documents, relevant),
                top_documents=documents[:k],
                document_types=tuple(sorted({types[d] for d in relevant
                                             if types.get(d) is not None})),
                relevant_document_ids=tuple(sorted(relevant)),
            )
        )
    buckets: dict[str, list[QueryResult]] = {}
    for result in per_query:
        for name in result.document_types or (UNKNOWN_TYPE,):
            buckets.setdefault(name, []).append(result)
    return EvalReport(
        k=k,
        overall=_average(per_query),
        by_document_type={name: _average(buckets[name]) for name in sorted(buckets)},
        per_query=per_query,
        version=version,
        embedding_model=embedding_model,
    )


