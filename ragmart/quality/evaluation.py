"""Offline retrieval quality on the judged query set (seeds/judged_queries.csv).

Metrics are at document level: the retrieved chunks are reduced to distinct documents in the
order of their best chunk (``ranked_documents``), then, per judged question,

* recall@k = |relevant ∩ top-k documents| / |relevant|,
* reciprocal rank = 1 / rank of the first relevant document (0 when none is ranked),
* nDCG@10 with binary relevance and a log2 discount; the ideal ranks every relevant document
  first (cut at 10),

averaged over the questions, overall and per document type (a question's types are those of
its relevant documents in the serving table; a question counts under each of them).

A *version* vN is the serving table ``fct_chunk_embeddings_vN``. ``evaluate_version`` embeds the
questions with the provider of the version's embedding model and ranks every chunk exactly
(``array_cosine_distance``, ties by ``chunk_id``): deterministic, independent of the HNSW index.
Evaluation is an operator tool: it ranks every served document whatever its allowed_groups
(retrieval's explicit operator switch, ``groups=ALL_GROUPS``), so a change of access never
moves its metrics or the gate, and its reports may name restricted documents.
The dbt model ``fct_retrieval_eval`` computes the same numbers in SQL. ``gate`` compares a
candidate with a baseline; ``ragmart publish`` refuses a candidate that regresses.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ragmart.embedding.providers import EmbeddingProvider, provider_for_model

JUDGED_QUERIES = Path("seeds/judged_queries.csv")
NDCG_DEPTH = 10
# The bucket of questions none of whose relevant documents is served with a document_type.
UNKNOWN_TYPE = "(unknown)"
SERVING_PREFIX = "fct_chunk_embeddings_"
# Largest drop of a metric, candidate below baseline, that the gate lets through. Mirrored by
# the vars eval_tolerance_* of tests/dbt/assert_candidate_does_not_regress.sql.
DEFAULT_TOLERANCE: dict[str, float] = {"recall@5": 0.02, "mrr": 0.03, "ndcg@10": 0.03}
# Where `record_published_metrics` keeps the metrics of published versions: the dbt test's
# baseline when the var eval_baseline is not set.
PUBLISHED_METRICS_TABLE = "published_eval_metrics"

_VERSION = re.compile(r"v[0-9]+")  # as ragmart.serving.publish.VERSION_RE
_METRIC = re.compile(r"(recall@[1-9][0-9]*|mrr|ndcg@10)")
_EPSILON = 1e-12  # a drop of exactly the tolerance passes, whatever the float rounding


@dataclass(frozen=True)
class JudgedQuery:
    query_id: str
    question: str
    relevant_document_ids: frozenset[str]


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

    @property
    def recall_at_k(self) -> float:
        return self.overall.recall_at_k

    @property
    def mrr(self) -> float:
        return self.overall.mrr

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


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: list[str]


def _named(metrics: Metrics, k: int) -> dict[str, float]:
    return {f"recall@{k}": metrics.recall_at_k, "mrr": metrics.mrr,
            f"ndcg@{NDCG_DEPTH}": metrics.ndcg_at_10}


# --------------------------------------------------------------------------- queries


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


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- the gate


def _canonical_metric(name: str) -> str:
    canonical = str(name).strip().lower().replace("_at_", "@")
    if not _METRIC.fullmatch(canonical):
        raise ValueError(
            f"unknown metric {name!r} in the tolerances; use recall@5 (or recall_at_5), mrr, "
            "ndcg@10 (or ndcg_at_10)"
        )
    return canonical


def parse_tolerances(items: Iterable[str]) -> dict[str, float]:
    """``["mrr=0.05", "recall_at_5=0.01"]`` (CLI flags) -> ``{"mrr": 0.05, "recall@5": 0.01}``."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep:
            raise ValueError(f"tolerance {item!r}: write METRIC=VALUE, e.g. mrr=0.05")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"tolerance {item!r}: {value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"tolerance {item!r}: must be a finite, non-negative number")
        out[_canonical_metric(name)] = number
    return out


def effective_tolerance(tolerance: Mapping[str, float] | None, k: int) -> dict[str, float]:
    """Every gated metric's tolerance: `tolerance` over DEFAULT_TOLERANCE (recall@k for any k)."""
    given = {_canonical_metric(name): float(v) for name, v in (tolerance or {}).items()}
    for name, value in given.items():
        if value < 0:
            raise ValueError(f"tolerance of {name} is negative ({value}); use 0 or more")
    recall = f"recall@{k}"
    return {
        recall: given.get(recall, DEFAULT_TOLERANCE["recall@5"]),
        "mrr": given.get("mrr", DEFAULT_TOLERANCE["mrr"]),
        "ndcg@10": given.get("ndcg@10", DEFAULT_TOLERANCE["ndcg@10"]),
    }


def gate(
    candidate: EvalReport,
    baseline: EvalReport | None,
    tolerance: Mapping[str, float] | None = None,
) -> GateResult:
    """Fail when a candidate metric is below the baseline's by more than its tolerance.

    `tolerance` maps metric names (``recall@5``/``recall_at_5``, ``mrr``, ``ndcg@10``) to the
    largest allowed drop; missing ones default to DEFAULT_TOLERANCE. No baseline: passes."""
    if baseline is None:
        return GateResult(passed=True, failures=[])
    if candidate.k != baseline.k:
        raise ValueError(
            f"cannot gate the candidate's recall at k={candidate.k} on the baseline's at "
            f"k={baseline.k}; evaluate both with the same -k"
        )
    tolerances = effective_tolerance(tolerance, candidate.k)
    base = baseline.metrics()
    failures = []
    for name, value in candidate.metrics().items():
        allowed = tolerances[name]
        if base[name] - value > allowed + _EPSILON:
            failures.append(
                f"{name} fell from {base[name]:.4f} (baseline {baseline.version or '?'}) to "
                f"{value:.4f} (candidate {candidate.version or '?'}), a drop of "
                f"{base[name] - value:.4f}, more than the tolerance {allowed:.4f}"
            )
    return GateResult(passed=not failures, failures=failures)


# --------------------------------------------------------------------------- versions


def serving_table(version: str) -> str:
    if not _VERSION.fullmatch(str(version)):
        raise ValueError(f"version {version!r} is not a version name like v1, v2")
    return f"{SERVING_PREFIX}{version}"


def version_names(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The versions whose serving table exists in this database, oldest first."""
    rows = conn.execute(
        "select distinct table_name from information_schema.tables "
        "where table_name like 'fct_chunk_embeddings_v%'"
    ).fetchall()
    names = [row[0][len(SERVING_PREFIX):] for row in rows]
    return sorted((v for v in names if _VERSION.fullmatch(v)), key=lambda v: int(v[1:]))


def _version_model(conn: duckdb.DuckDBPyConnection, version: str) -> str:
    table = serving_table(version)
    versions = version_names(conn)
    if version not in versions:
        raise ValueError(
            f"version {version} has no serving table {table} in this database; versions: "
            f"{', '.join(versions) or 'none (run `dbt build`)'}"
        )
    models = [row[0] for row in conn.execute(
        f"select distinct embedding_model from {table} order by 1").fetchall()]
    if len(models) != 1:
        raise ValueError(
            f"version {version} must hold the vectors of exactly one embedding_model to be "
            f"evaluated, found {models or 'no rows'} in {table}"
        )
    return models[0]


def exact_document_rankings(
    conn: duckdb.DuckDBPyConnection, table: str, vectors: np.ndarray
) -> list[list[str]]:
    """Per query vector, every served document ranked by its best chunk: (cosine distance,
    chunk_id). One query for all vectors (as fct_retrieval_eval does it).

    A document's best chunk is the least (distance, chunk_id) pair of its chunks, found by a
    grouped min rather than ranking every chunk per question (a window over questions x
    chunks): the same order, ~10x faster (20,000 chunks x 77 questions: 1.6 s instead of
    15.6 s), which is most of what a publish costs at that size."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or not len(matrix):
        return [[] for _ in range(len(matrix))]
    flat = pa.array(matrix.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    questions = pa.table({  # noqa: F841 - read by the SQL below
        "question_index": pa.array(np.arange(len(matrix), dtype=np.int32)),
        "embedding": pa.ListArray.from_arrays(offsets, flat),
    })
    rows = conn.execute(
        f"""
        with vectors as (
            select question_index, cast(embedding as float[{matrix.shape[1]}]) as embedding
            from questions
        ),
        best_chunks as (
            select
                vectors.question_index,
                served.document_id,
                min((array_cosine_distance(served.embedding, vectors.embedding),
                    served.chunk_id)) as best_chunk
            from vectors
            cross join {table} as served
            group by vectors.question_index, served.document_id
        )
        select question_index, document_id
        from best_chunks
        order by question_index, best_chunk
        """
    ).fetchall()
    rankings: list[list[str]] = [[] for _ in range(len(matrix))]
    for index, document_id in rows:
        rankings[index].append(document_id)
    return rankings


def evaluate_version(
    source: duckdb.DuckDBPyConnection | str | Path,
    version: str,
    queries: Sequence[JudgedQuery] | None = None,
    *,
    k: int = 5,
    provider: EmbeddingProvider | None = None,
) -> EvalReport:
    """Evaluate the serving table of `version` with exact search, embedding the questions with
    the provider of the version's embedding_model (or `provider`, which must match it).

    `source`: an open connection, or a database file (build database or published snapshot),
    opened read-only."""
    queries = load_judged_queries() if queries is None else queries
    if not isinstance(source, duckdb.DuckDBPyConnection):
        conn = _connect_file(source)
        try:
            return evaluate_version(conn, version, queries, k=k, provider=provider)
        finally:
            conn.close()
    conn = source
    model = _version_model(conn, version)
    provider = provider or provider_for_model(model, version=version, purpose="evaluate")
    if provider.model != model:
        raise ValueError(
            f"version {version} holds vectors of {model!r} but the provider {provider.name!r} "
            f"embeds with {provider.model!r}"
        )
    table = serving_table(version)
    types = dict(conn.execute(
        f"select document_id, min(document_type) from {table} group by document_id"
    ).fetchall())
    questions = list(dict.fromkeys(q.question for q in queries))
    vectors = (provider.embed(questions) if questions
               else np.zeros((0, provider.dimensions), np.float32))
    rankings = dict(zip(questions, exact_document_rankings(conn, table, vectors), strict=True))
    return evaluate(queries, rankings.__getitem__, k=k, document_types=types, version=version,
                    embedding_model=model)


def _connect_file(path: str | Path) -> duckdb.DuckDBPyConnection:
    from ragmart.duck import connect

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"database {path} does not exist; run `make run` or `dbt build`, or pass --db")
    return connect(path, read_only=True)


def open_version(version: str, db_path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection in which `version`'s serving table can be read: the file
    `db_path` when given, else where ragmart.serving.pointer says the version lives (its published
    snapshot when it is the one serving, else the build database at $RAGMART_DB)."""
    if db_path is not None:
        return _connect_file(db_path)
    from ragmart.serving.pointer import resolve_target

    return _connect_file(resolve_target(None, version).database)


def default_version(db_path: str | Path | None = None) -> str:
    """The version `ragmart eval` evaluates when none is named: the newest in `db_path`, or,
    without it, the one serving (ragmart.serving.pointer.resolve_target)."""
    if db_path is None:
        from ragmart.serving.pointer import resolve_target

        return resolve_target(None, None).version
    conn = _connect_file(db_path)
    try:
        versions = version_names(conn)
    finally:
        conn.close()
    if not versions:
        raise ValueError(f"no serving table fct_chunk_embeddings_vN in {db_path}; run `dbt build`")
    return versions[-1]


# --------------------------------------------------------------------------- dbt support

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
    from ragmart.lineage import current_invocation_id, utc_now

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


def record_published_metrics(conn: duckdb.DuckDBPyConnection, report: EvalReport) -> None:
    """Append `report`'s overall metrics to PUBLISHED_METRICS_TABLE (one row per metric, dbt
    names, one publish_seq per call): the baseline of assert_candidate_does_not_regress when the
    var eval_baseline is not given."""
    from ragmart.lineage import utc_now

    conn.execute(
        f"""
        create table if not exists {PUBLISHED_METRICS_TABLE} (
            publish_seq bigint not null,
            version varchar,
            metric varchar not null,
            metric_value double not null,
            embedding_model varchar,
            queries integer,
            published_at timestamp not null
        )
        """
    )
    seq = conn.execute(
        f"select coalesce(max(publish_seq), 0) + 1 from {PUBLISHED_METRICS_TABLE}"
    ).fetchone()[0]
    published_at = utc_now()
    for metric, value in report.dbt_vars().items():
        conn.execute(
            f"insert into {PUBLISHED_METRICS_TABLE} values (?, ?, ?, ?, ?, ?, ?)",
            [seq, report.version, metric, float(value), report.embedding_model,
             report.queries, published_at],
        )
