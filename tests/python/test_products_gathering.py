"""SharedProducts' gathering: the thread about to run a product of the vectors in memory waits
for the searches that announced one (`Gathering.expecting`) and have not asked yet, so that
concurrent searches share more products; a search alone, or one that leaves without asking,
never holds another back. The answers are the products' own (each row of a batched product is
that question's)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ragmart.retrieval import products
from ragmart.retrieval.products import SharedProducts

ROWS, DIMS = 64, 8


@pytest.fixture
def shared(monkeypatch) -> SharedProducts:
    monkeypatch.setattr(products, "GATHER_SECONDS", 60.0)  # only the announcements release it
    matrix = np.random.default_rng(7).standard_normal((ROWS, DIMS)).astype(np.float32)
    return SharedProducts(np.asfortranarray(matrix))


def leading(shared: SharedProducts) -> bool:
    batcher = shared._float
    with batcher._lock:
        return batcher._busy and len(batcher._waiting) == 1


def until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_a_search_alone_never_waits(monkeypatch) -> None:
    monkeypatch.setattr(products, "GATHER_SECONDS", 3600.0)
    shared = SharedProducts(np.eye(ROWS, DIMS, dtype=np.float32))
    q = np.arange(DIMS, dtype=np.float32)
    with shared.gathering.expecting(), shared.gathering.expecting():  # nested: counted once
        got = shared.product(q)
    np.testing.assert_array_equal(got, np.eye(ROWS, DIMS, dtype=np.float32) @ q)
    assert shared.batches == {1: 1} and shared.gathering._pending == 0


def test_the_leader_waits_for_an_announced_search_and_serves_both(shared) -> None:
    questions = np.random.default_rng(8).standard_normal((2, DIMS)).astype(np.float32)
    announced, answers = threading.Event(), {}

    def late() -> None:
        with shared.gathering.expecting():
            announced.set()
            until(lambda: leading(shared), "the other search leads")
            answers["late"] = shared.product(questions[1])

    other = threading.Thread(target=late)
    other.start()
    announced.wait(30)
    answers["leader"] = shared.product(questions[0])  # leads, waits for `late`
    other.join(30)
    assert shared.batches == {2: 1}  # one product served both
    expected = questions @ shared.columns
    np.testing.assert_allclose(answers["leader"], expected[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(answers["late"], expected[1], rtol=1e-6, atol=1e-6)
    assert shared.gathering._pending == 0


def test_a_search_that_leaves_without_asking_releases_the_leader(shared) -> None:
    announced, leave = threading.Event(), threading.Event()

    def leaves() -> None:
        with shared.gathering.expecting():
            announced.set()
            leave.wait(30)  # e.g. a contract leaving too few rows for a product

    other = threading.Thread(target=leaves)
    other.start()
    announced.wait(30)
    done = threading.Event()
    leader = threading.Thread(target=lambda: (shared.product(np.ones(DIMS, np.float32)),
                                              done.set()))
    leader.start()
    until(lambda: leading(shared), "the product's thread leads")
    assert not done.wait(0.05)  # held while the announced search may still ask
    leave.set()
    assert done.wait(30)
    leader.join(30)
    other.join(30)
    assert shared.batches == {1: 1} and shared.gathering._pending == 0
