"""The long-lived reader's search without SQL (ragmart.retrieval.memory.ServingVectors.top):
the same chunks, order, distances and sources as the exact SQL search, for every kind of
caller and contract, on the tiny serving database of test_retrieval_contracts.

The HTTP service answering exactly as `ragmart retrieve --json` does on a real build is
tests/python/test_http.py's; these cases cover many callers and contracts in-process.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from test_retrieval_contracts import NOW, TABLES, conn, queries, tiny  # noqa: F401

from ragmart.duck import connect
from ragmart.retrieval.contracts import Contract
from ragmart.retrieval.execution import search_contract
from ragmart.retrieval.memory import ServingVectors, SharedProducts, duckdb_cosine_distances
from ragmart.retrieval.request import ALL_GROUPS


class CountingConnection:
    """A DuckDB connection that counts the statements run through it."""

    def __init__(self, connection) -> None:
        self.conn, self.statements = connection, 0

    def execute(self, *args, **kwargs):
        self.statements += 1
        return self.conn.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_distances_are_duckdbs_bit_for_bit(conn) -> None:  # noqa: F811
    """duckdb_cosine_distances is DuckDB's array_cosine_distance, to the last bit: over the
    stored vectors and over vectors of any scale, a zero vector included (NaN in both)."""
    rng = np.random.default_rng(5)
    stored = conn.execute(f"select embedding from {TABLES.serving}").fetchnumpy()["embedding"]
    stored = np.stack([np.asarray(v, dtype=np.float32) for v in stored])
    scaled = (rng.normal(size=(300, stored.shape[1]))
              * rng.choice([1e-3, 1.0, 7.0, 1e3], size=(300, 1))).astype(np.float32)
    scaled[0] = 0.0
    memory = duckdb.connect()
    for matrix in (stored, scaled):
        dims = matrix.shape[1]
        memory.register("vectors", pa.table({"i": np.arange(len(matrix)), "v": (
            pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dims))}))
        for query in [*queries(3), rng.normal(size=dims) * 40]:
            q = np.asarray(query, dtype=np.float32)
            ours = duckdb_cosine_distances(matrix, q)
            theirs = memory.execute(
                f"select array_cosine_distance(v, cast($q as float[{dims}])) as d "
                "from vectors order by i", {"q": "[" + ",".join(map(repr, q.tolist())) + "]"}
            ).fetchnumpy()["d"].astype(np.float32)
            assert np.array_equal(ours.view(np.int32), theirs.view(np.int32))


CONTRACTS = [
    None,
    Contract(name="policies", document_types=("policy",), missing_allowed_groups="allow"),
    Contract(name="complete", min_chunk_completeness="section"),
    Contract(name="near", min_similarity=0.05, missing_allowed_groups="allow"),
    Contract(name="nothing_near", min_similarity=0.999),
]
CALLERS = [["all-staff"], ["hr"], ["all-staff", "hr"], None, ALL_GROUPS]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name if c else "none")
def test_the_answer_without_sql_is_the_exact_searchs(conn, contract) -> None:  # noqa: F811
    """Every caller and contract, k from 1 to past the eligible count: the same chunks (ids,
    order, distances, every printed field and the source) or the same abstention as the exact
    search, and once a caller's eligible set is known, not one SQL statement per search."""
    vectors = ServingVectors.load(conn, TABLES.serving, TABLES.documents)
    assert vectors.records is not None
    counting = CountingConnection(conn)
    answered = 0
    for groups in CALLERS:
        for k in (1, 5, 40):
            for q in queries(4, seed=k):
                exact = search_contract(conn, q, k=k, contract=contract, groups=groups,
                                        now=NOW, exact=True)
                search_contract(counting, q, k=k, contract=contract, groups=groups, now=NOW,
                                vectors=vectors)  # the eligible set, once per caller
                before = counting.statements
                fast = search_contract(counting, q, k=k, contract=contract, groups=groups,
                                       now=NOW, vectors=vectors)
                assert fast.chunks == exact.chunks, (groups, k)
                assert fast.abstained == exact.abstained and fast.reason == exact.reason
                if fast.chunks:
                    answered += 1
                    assert fast.strategy == "memory"
                    assert counting.statements == before  # no SQL on the way to an answer
    if contract is None or contract.min_similarity is None:
        assert answered


def test_a_clock_bound_contract_still_answers_exactly(conn) -> None:  # noqa: F811
    """max_document_age: an eligible set computed a little earlier is a superset, so the
    search re-applies every clause in SQL; the answer is still the exact one."""
    vectors = ServingVectors.load(conn, TABLES.serving, TABLES.documents)
    aged = Contract(name="aged", max_document_age=dt.timedelta(days=15),
                    missing_allowed_groups="allow")
    for seconds in (0, 5, 30):
        now = NOW + dt.timedelta(seconds=seconds)
        for q in queries(3):
            fast = search_contract(conn, q, k=5, contract=aged, groups=["all-staff"], now=now,
                                   vectors=vectors)
            exact = search_contract(conn, q, k=5, contract=aged, groups=["all-staff"],
                                    now=now, exact=True)
            assert fast.chunks == exact.chunks


def test_queries_arriving_together_share_one_product() -> None:
    """SharedProducts: threads asking at once each get their own column (matrix @ q up to
    float rounding), computed in batches; an error reaches every query of its batch."""
    rng = np.random.default_rng(9)
    matrix = rng.normal(size=(20_000, 64)).astype(np.float32)
    products = SharedProducts(matrix)
    asked = [rng.normal(size=64).astype(np.float32) for _ in range(96)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(products.product, asked))
    for q, answer in zip(asked, answers, strict=True):
        np.testing.assert_allclose(answer, matrix @ q, rtol=0, atol=1e-4)
    with pytest.raises(ValueError):
        products.product(np.zeros(3, dtype=np.float32))  # the wrong size: numpy's error
    np.testing.assert_allclose(products.product(asked[0]), matrix @ asked[0], atol=1e-4)
    # every query counted once, in the batch it was computed in
    assert sum(size * n for size, n in products.batches.items()) == len(asked) + 2


def test_worker_threads_sharing_the_vectors_answer_exactly(tiny) -> None:  # noqa: F811
    """What `ragmart serve` does: one matrix, one reader (connection, eligibility cache) per
    worker thread, searches side by side; every answer is the exact search's."""
    connections = [connect(tiny[0], read_only=True) for _ in range(4)]
    try:
        first = ServingVectors.load(connections[0], TABLES.serving, TABLES.documents)
        copies = [first] + [replace(first, _eligible=OrderedDict(), _chunk_index=None)
                            for _ in connections[1:]]
        assert all(c.products is first.products for c in copies)
        work = [(q, groups) for q in queries(12, seed=4)
                for groups in (ALL_GROUPS, ["all-staff"])]

        def answer(i: int):
            q, groups = work[i]
            conn, vectors = connections[i % 4], copies[i % 4]
            with locks[i % 4]:
                return search_contract(conn, q, k=7, groups=groups, now=NOW, vectors=vectors)

        locks = [threading.Lock() for _ in connections]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(answer, range(len(work))))
        for (q, groups), got in zip(work, answers, strict=True):
            exact = search_contract(connections[0], q, k=7, groups=groups, now=NOW,
                                    exact=True)
            assert got.chunks == exact.chunks and got.chunks
    finally:
        for conn in connections:
            conn.close()
