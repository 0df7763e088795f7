"""The products of questions with every serving vector, shared by the threads that search them.

`SharedProducts` batches the queries that arrive while a product runs into the next one (one
matrix-matrix product for all of them). From QUANTIZE_FROM_ROWS rows it also keeps the vectors
quantized to int8, one scale per row, and proposes candidates from an int8 product run by
ONNX Runtime's integer kernels (MatMulInteger: the vectors a constant it packs once, the
questions quantized per search). numpy has no fast integer or half-precision product, and at
100k x 384 the float32 one is the wall of a search (bench/serve.py, same machine, one core:
8 questions 14 ms in float32 against 4.3 ms in int8; one question 3.7 against 3.0 ms).

The integer product is exact (int32 sums of int8 x int8, far below 2^31), so the only error is
quantization's, and it is bounded per row: for a unit question q, its quantized q~ and a row x
with quantized x~, |q.x - q~.x~| <= |q - q~| |x| + |q~| |x - x~|. In distance terms (the row
divided by its norm) the approximate cosine distance is within `err_q + norm_q * rho[i]` of the
exact one, `rho[i] = |x - x~| / |x|` (stored rounded up). ragmart.retrieval.memory turns that
into a lower bound per row and keeps only the rows that can still be among the k nearest; they
are scored again in float32 and then with DuckDB's own distances, so answers stay exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

# from this many rows, the vectors are also kept as int8 for the first pass (below it a
# float32 product costs little: ~0.5 ms at 10k x 384)
QUANTIZE_FROM_ROWS = 20_000
LEVELS = 127  # int8 codes in [-127, 127]
# how long the thread about to run a product waits for the searches that announced one and
# have not asked yet (`SharedProducts.expecting`): one int8 product of 100k rows costs ~2.7 ms
# of CPU for 1 question, ~3.3 ms for 4 and ~3.8 ms for 8 (bench/serve.py's machine)
GATHER_SECONDS = 0.004


class Expected:
    """One announced product, settled when its search asks for it or will no longer."""

    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled = False


class Gathering:
    """The searches that announced a product and have not asked for it yet, for a Batcher's
    leading thread to wait for them (at most GATHER_SECONDS) before it runs the product:
    concurrent searches then share more products. A search alone never waits, and one that
    leaves without asking releases the wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending = 0
        self._local = threading.local()

    def expect(self) -> Expected:
        """Announce a product that a search (on this thread or another: `expecting(it)`) will
        ask for; settle it with `expecting` or `settle`."""
        with self._cond:
            self._pending += 1
        return Expected()

    @contextmanager
    def expecting(self, expected: Expected | None = None) -> Iterator[None]:
        """Within the block this thread will ask for a product (or leave the block): the
        announcement `expected`, else a new one; inside another block, that block's."""
        if getattr(self._local, "expected", None) is not None:  # nested: the outer counts
            if expected is not None:
                self.settle(expected)
            yield
            return
        self._local.expected = expected = expected or self.expect()
        try:
            yield
        finally:
            self._local.expected = None
            self.settle(expected)

    def arrived(self) -> None:
        """This thread asks for its product now."""
        expected = getattr(self._local, "expected", None)
        if expected is not None:
            self.settle(expected)

    def settle(self, expected: Expected) -> None:
        with self._cond:
            if expected.settled:
                return
            expected.settled = True
            self._pending -= 1
            if self._pending == 0:
                self._cond.notify_all()

    def wait(self) -> None:
        """Until no announced search is still to ask, or GATHER_SECONDS passed."""
        deadline = None
        with self._cond:
            while self._pending > 0:
                now = time.monotonic()
                deadline = deadline or now + GATHER_SECONDS
                if now >= deadline or not self._cond.wait(deadline - now):
                    return


class _Waiting:
    __slots__ = ("done", "error", "query", "result")

    def __init__(self, query: np.ndarray) -> None:
        self.query, self.result, self.done = query, None, threading.Event()
        self.error: BaseException | None = None


class Batcher:
    """`compute(stacked queries)` for the threads asking at once: one thread at a time
    computes (the first to arrive; when it is done, the first of those that arrived meanwhile
    takes over with every query waiting then); the others wait for their row. `batches`
    counts the products by how many queries each served (ragmart serve's /metrics)."""

    def __init__(self, one: Callable[[np.ndarray], np.ndarray],
                 many: Callable[[np.ndarray], np.ndarray],
                 gathering: Gathering | None = None) -> None:
        self._one, self._many = one, many
        self._gathering = gathering
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._busy = False
        self.batches: dict[int, int] = {}

    def __call__(self, query: np.ndarray) -> np.ndarray:
        mine = _Waiting(query)
        with self._lock:
            self._waiting.append(mine)
            lead, self._busy = not self._busy, True
        if self._gathering is not None:
            self._gathering.arrived()
        if not lead:
            mine.done.wait()
            if mine.error is not None:
                raise mine.error
            if mine.result is not None:
                return mine.result
        # leading: compute for everyone waiting now (this query among them), once the
        # searches about to ask have
        if self._gathering is not None:
            self._gathering.wait()
        with self._lock:
            batch, self._waiting = self._waiting, []
            self.batches[len(batch)] = self.batches.get(len(batch), 0) + 1
        try:
            if len(batch) == 1:
                results = [self._one(batch[0].query)]
            else:
                results = list(self._many(np.stack([w.query for w in batch])))
        except BaseException as exc:
            for waiting in batch:
                waiting.error = exc
                waiting.done.set()
            raise
        finally:
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                self._busy = following is not None
            if following is not None:
                following.done.set()  # no result: it leads the next product
        for waiting, result in zip(batch, results, strict=True):
            waiting.result = result
            waiting.done.set()
        assert mine.result is not None
        return mine.result


class SharedProducts:
    """`matrix @ q` (`product`) and, from QUANTIZE_FROM_ROWS rows, the int8 approximation of
    a unit question's products (`approximate`), for the threads searching one matrix.

    Without the int8 vectors, `matrix` (the float32 rows) is kept column-major, so the float
    product reads `matrix.T`, a contiguous (dims, rows) block, as `q @ matrix.T` (OpenBLAS runs
    one query about twice as fast in that layout as row-major `matrix @ q`). With them, the
    float rows are read only at the few positions the int8 pass keeps: row-major, each is one
    contiguous block (column-major, 384 cache lines: ~0.5 ms of a hybrid search at 100k).
    A batched row differs from `matrix @ q` alone by float rounding only (~1e-7), far inside
    the slack the candidate pools allow for."""

    def __init__(self, matrix: np.ndarray) -> None:
        matrix = np.asarray(matrix, dtype=np.float32)
        self.quantized = Quantized.build(matrix) if len(matrix) >= QUANTIZE_FROM_ROWS else None
        self.matrix = (np.ascontiguousarray(matrix) if self.quantized is not None
                       else np.asfortranarray(matrix))  # (no copy when it is already)
        self.columns = columns = self.matrix.T  # (dims, rows): a view
        self.gathering = gathering = Gathering()
        # (no reference to self: a cycle would keep the matrix until the collector runs)
        self._float = Batcher(lambda q: q @ columns, lambda qs: qs @ columns, gathering)
        self._codes = (Batcher(self.quantized.run_one, self.quantized.run, gathering)
                       if self.quantized is not None else None)

    @property
    def batches(self) -> dict[int, int]:
        out = dict(self._float.batches)
        for size, count in (self._codes.batches if self._codes is not None else {}).items():
            out[size] = out.get(size, 0) + count
        return out

    def product(self, query: np.ndarray) -> np.ndarray:
        return self._float(np.asarray(query, dtype=np.float32))

    def approximate(self, unit: np.ndarray) -> tuple[np.ndarray, float, float] | None:
        """(approximate cosine similarity times each row's norm divided by it, i.e. the
        approximate q.x / |x| of every row; `err_q`; `norm_q`) for the unit question `unit`
        (see the module doc for the bound), or None without the int8 vectors or for a question
        that cannot be quantized (zero or not finite)."""
        if self.quantized is None or self._codes is None:
            return None
        coded = quantize_question(unit)
        if coded is None:
            return None
        codes, scale, err_q, norm_q = coded
        sums = self._codes(codes)
        similarity = sums.astype(np.float32)
        similarity *= self.quantized.scaled_inverse_norms
        similarity *= np.float32(scale)
        return similarity, err_q, norm_q


def quantize_question(unit: np.ndarray) -> tuple[np.ndarray, float, float, float] | None:
    """(uint8 codes offset by 128, scale, |q - q~|, |q~|) of a question, or None."""
    q = np.asarray(unit, dtype=np.float64).reshape(-1)
    top = float(np.max(np.abs(q))) if len(q) else 0.0
    if not np.isfinite(top) or top == 0.0:
        return None
    scale = top / LEVELS
    ints = np.clip(np.rint(q / scale), -LEVELS, LEVELS)
    approx = ints * scale
    return ((ints + 128).astype(np.uint8), scale, float(np.linalg.norm(q - approx)),
            float(np.linalg.norm(approx)))


def quantize_rows(x: np.ndarray, block: int = 8_192
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 codes (dims, rows), scale / norm per row (float32), rho per row (float32, rounded
    up)) of the float32 rows `x`: code = round(x / scale), scale = max|x| / LEVELS. Computed in
    float64, `block` rows at a time (no full-size float64 copy)."""
    rows, dims = x.shape
    codes = np.empty((dims, rows), dtype=np.int8)
    scaled_inverse_norms = np.empty(rows, dtype=np.float32)
    rho = np.empty(rows, dtype=np.float32)
    for start in range(0, rows, block):
        part = x[start:start + block].astype(np.float64)
        top = np.max(np.abs(part), axis=1)
        scales = np.where(top > 0, top / LEVELS, 1.0)
        ints = np.clip(np.rint(part / scales[:, None]), -LEVELS, LEVELS)
        norms = np.linalg.norm(part, axis=1)
        errors = np.linalg.norm(part - ints * scales[:, None], axis=1)
        stop = start + len(part)
        codes[:, start:stop] = ints.T
        positive = norms > 0
        scaled_inverse_norms[start:stop] = np.divide(scales, norms, out=np.zeros_like(norms),
                                                     where=positive)
        relative = np.divide(errors, norms, out=np.zeros_like(norms), where=positive)
        rho[start:stop] = np.nextafter(relative.astype(np.float32), np.float32(np.inf))
    return codes, scaled_inverse_norms, rho


class Quantized:
    """Each row's scale / norm and relative error `rho` (rounded up), and an ONNX Runtime
    session whose MatMulInteger holds the rows' int8 codes as a constant."""

    def __init__(self, scaled_inverse_norms: np.ndarray, rho: np.ndarray,
                 session: object) -> None:
        self.scaled_inverse_norms, self.rho = scaled_inverse_norms, rho
        self._session = session

    @classmethod
    def build(cls, matrix: np.ndarray) -> Quantized | None:
        """None when ONNX Runtime is missing or a vector is not finite (float32 then)."""
        try:
            import onnxruntime
        except ImportError:
            return None
        x = np.asarray(matrix, dtype=np.float32)
        if not x.size or not np.isfinite(x).all():
            return None
        codes, scaled_inverse_norms, rho = quantize_rows(x)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # the searches run side by side on the service's
        options.inter_op_num_threads = 1  # threads; the shared product takes one core
        options.log_severity_level = 3
        # the session keeps its own (packed) copy of the codes: ~0.4 KB per row at 384 dims
        session = onnxruntime.InferenceSession(_matmul_integer(codes), options,
                                               providers=["CPUExecutionProvider"])
        return cls(scaled_inverse_norms, rho, session)

    def run(self, questions: np.ndarray) -> np.ndarray:
        """int32 (n, rows): the exact integer products of uint8 codes (offset 128)."""
        return self._session.run(None, {"A": questions})[0]  # type: ignore[attr-defined]

    def run_one(self, question: np.ndarray) -> np.ndarray:
        return self.run(question.reshape(1, -1))[0]


def _matmul_integer(codes: np.ndarray) -> bytes:
    """An ONNX model (protobuf bytes) of Y = MatMulInteger(A, codes, a_zero_point=128): A uint8
    (n, dims), codes int8 (dims, rows), Y int32 (n, rows). Written by hand: the `onnx` package
    is not a dependency; the fields are onnx.proto3's (ModelProto, GraphProto, NodeProto,
    TensorProto, ValueInfoProto)."""
    dims, rows = codes.shape

    def key(number: int, wire: int) -> bytes:
        return _varint(number << 3 | wire)

    def text(number: int, value: str | bytes) -> bytes:
        data = value.encode() if isinstance(value, str) else value
        return key(number, 2) + _varint(len(data)) + data

    def integer(number: int, value: int) -> bytes:
        return key(number, 0) + _varint(value)

    def value_info(name: str, element: int, shape: list[int | str]) -> bytes:
        sizes = b"".join(text(1, integer(1, d) if isinstance(d, int) else text(2, d))
                         for d in shape)
        return text(1, name) + text(2, text(1, integer(1, element) + text(2, sizes)))

    int8, uint8, int32 = 3, 2, 6  # TensorProto.DataType
    constant = (integer(1, dims) + integer(1, rows) + integer(2, int8) + text(8, "B")
                + text(9, codes.tobytes()))
    zero_point = integer(2, uint8) + text(8, "a_zero") + text(9, bytes([128]))
    node = (text(1, "A") + text(1, "B") + text(1, "a_zero") + text(2, "Y")
            + text(4, "MatMulInteger"))
    graph = (text(1, node) + text(2, "ragmart_products") + text(5, constant)
             + text(5, zero_point) + text(11, value_info("A", uint8, ["n", dims]))
             + text(12, value_info("Y", int32, ["n", rows])))
    return integer(1, 8) + text(8, text(1, "") + integer(2, 13)) + text(7, graph)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
