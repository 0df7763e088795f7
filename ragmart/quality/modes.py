"""The judged set by search mode: vector, lexical and hybrid (ragmart.retrieval.fusion).

`ragmart eval --modes` ranks each judged question's documents in every mode, through the same
search a caller gets (ragmart.retrieval.api.Retriever, the operator switch ALL_GROUPS as in
every evaluation), and reports recall@k, MRR and nDCG@10 on the whole set and on the
exact-term questions: those whose query_id starts with EXACT_TERM_PREFIX (identifiers,
numbers, names a user types as they appear in the documents: seeds/judged_queries.csv).

A document's rank is its best chunk's among the top DEPTH chunks of the mode; a lexical search
lists only chunks holding a term of the question, so a question none of whose terms any
chunk holds scores 0 there (an abstention ranks nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragmart.quality.judged import JudgedQuery
from ragmart.quality.metrics import EvalReport, Metrics, evaluate
from ragmart.retrieval.fusion import DEFAULT_MODE, MODES

EXACT_TERM_PREFIX = "qx"
DEPTH = 100  # chunks ranked per question and mode


@dataclass(frozen=True)
class ModeReport:
    mode: str
    report: EvalReport  # the whole set
    exact_terms: Metrics  # the exact-term questions

    def to_dict(self) -> dict:
        k = self.report.k
        exact = self.exact_terms
        return {
            "mode": self.mode,
            "all": self.report.to_dict()["metrics"] | {"queries": self.report.queries},
            "exact_terms": {"queries": exact.queries, f"recall@{k}": exact.recall_at_k,
                            "mrr": exact.mrr, "ndcg@10": exact.ndcg_at_10},
        }


def _subset(report: EvalReport, ids: set[str]) -> Metrics:
    rows = [q for q in report.per_query if q.query_id in ids]
    n = len(rows)
    if not n:
        return Metrics(0, 0.0, 0.0, 0.0)
    return Metrics(n, sum(q.recall for q in rows) / n, sum(q.reciprocal_rank for q in rows) / n,
                   sum(q.ndcg for q in rows) / n)


def evaluate_modes(database: str | Path, version: str, queries: Sequence[JudgedQuery], *,
                   k: int = 5, modes: Sequence[str] = MODES) -> list[ModeReport]:
    """Every mode's report on the judged `queries`, searching `version` in `database`."""
    from ragmart.retrieval.api import ALL_GROUPS, Retriever

    exact_ids = {q.query_id for q in queries if q.query_id.startswith(EXACT_TERM_PREFIX)}
    out = []
    with Retriever(db_path=database, index_version=version) as reader:
        questions = list(dict.fromkeys(q.question for q in queries))
        vectors = dict(zip(questions, reader.provider.embed(questions), strict=True))
        for mode in modes:
            ranked = {}
            for question in questions:
                result = reader.search(vectors[question], question=question, mode=mode,
                                       k=DEPTH, groups=ALL_GROUPS)
                ranked[question] = [c.document_id for c in result]
            report = evaluate(queries, ranked.__getitem__, k=k, version=version,
                              embedding_model=reader.provider.model)
            out.append(ModeReport(mode, report, _subset(report, exact_ids)))
    return out


def render_modes(reports: Sequence[ModeReport]) -> str:
    """A Markdown table: one row per mode, the whole set and the exact-term questions."""
    if not reports:
        return ""
    k = reports[0].report.k
    first = reports[0]
    lines = [
        f"## Search modes ({first.report.version}, {first.report.embedding_model}; "
        f"default {DEFAULT_MODE})",
        "",
        f"| mode | all: recall@{k} | all: MRR | all: nDCG@10 | exact terms: recall@{k} "
        "| exact terms: MRR | exact terms: nDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        a, e = r.report.overall, r.exact_terms
        lines.append(f"| {r.mode} | {a.recall_at_k:.4f} | {a.mrr:.4f} | {a.ndcg_at_10:.4f} "
                     f"| {e.recall_at_k:.4f} | {e.mrr:.4f} | {e.ndcg_at_10:.4f} |")
    lines += ["", f"{first.report.queries} questions, {first.exact_terms.queries} of them "
              f"exact-term (query_id {EXACT_TERM_PREFIX}NN)."]
    return "\n".join(lines) + "\n"
