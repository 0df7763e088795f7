"""fts' BM25 as DuckDB 1.5 computes lexical.scored_sql, in float64 operation for operation: the
scores a Retriever prints without running the statement are the statement's to the bit.

scored_sql is ``round(fsum(ln(((num_docs - df) + 0.5) / (df + 0.5) + 1) * (tf * (1.2 + 1)) /
(tf + 1.2 * (1 - 0.75 + 0.75 * (len / avgdl)))), 9)`` over one row per (chunk, term), with
num_docs, df, tf and len BIGINT and avgdl DOUBLE. DuckDB binds it as follows (typeof() and its
source, v1.5.5):

- ``(num_docs - df) + 0.5`` and ``df + 0.5`` are DECIMAL(21,1) (exact), divided as DOUBLE: each
  decimal cast to double by TryCastDecimalToFloatingPoint (`decimal_to_double`), then ``/``,
  ``+ 1.0``, std::log (Python's math.log: the same libm call; one value per term, `idf`);
- ``tf * (1.2 + 1)`` is DECIMAL(31,1), tf * 22 exactly, cast to double the same way: (tf * 22)
  / 10.0 while tf * 22 <= 2^53;
- ``1 - 0.75`` folds to the decimal 0.25; ``len / avgdl`` is double(len) / avgdl; the decimals
  met by a double become doubles (0.75, 0.25, 1.2 exactly as Python's literals), so the
  denominator is double(tf) + 1.2 * (0.25 + 0.75 * (len / avgdl)) (`length_norms`: the part
  after ``tf +``, one value per chunk);
- one term's score is (idf * tf22) / denominator;
- fsum is a Kahan sum (KahanAddInternal; partial states combined value then err), with no
  final correction; a chunk's terms arrive in an order the plan chooses (row order in one
  thread, partial states combined across threads). Any of those sums of n positive terms lies
  within a few n ulps of the exact sum: `round9` of the Kahan sum in term order is the
  statement's value when every sum within `order_margin` of it rounds the same way (round9 is
  monotone), which `scores` reports per chunk; a chunk for which it is not, has no determined
  score (the caller asks DuckDB);
- round(x, 9) is RoundOperatorPrecision: std::round(x * 1e9) / 1e9 (half away from zero, not
  Python's or numpy's half to even), x itself when that is not finite.

tests/python/test_bm25_exact.py compares every step with DuckDB's statement on random and
adversarial integers with ``==``.
"""

from __future__ import annotations

import math

import numpy as np

K1, B = 1.2, 0.75  # fts' BM25 parameters (lexical.scored_sql writes them)
EXACT_INT = 2 ** 53  # TryCastDecimalToFloatingPoint's fast path: |v| <= 2^53
TF_FAST = EXACT_INT // 22  # tf * 22 within the fast path
SCALE = 1e9  # round(x, 9)'s modifier: std::pow(10, 9), exact
# any plausible summation order of n terms against the Kahan sum, relative: 8 (n + 1) u
ORDER_ULPS = 2.0 ** -50


def hugeint_to_double(v: int) -> float:
    """DuckDB's CastBigintToFloating of the hugeint v: double(lower) + double(upper) * 2^64,
    or -double(2^64 - 1 - lower) - 1 when upper is -1."""
    upper, lower = v >> 64, v & (2 ** 64 - 1)
    if upper == -1:
        return -float(2 ** 64 - 1 - lower) - 1
    return float(lower) + float(upper) * 18446744073709551616.0


def decimal_to_double(v: int, scale: int) -> float:
    """TryCastDecimalToFloatingPoint<hugeint_t, double> of the decimal v / 10^scale."""
    power = 10 ** scale
    if -EXACT_INT <= v <= EXACT_INT or scale == 0:
        return hugeint_to_double(v) / float(power)
    div = v // power if v >= 0 else -(-v // power)  # C++'s division: towards zero
    return hugeint_to_double(div) + hugeint_to_double(v - div * power) / float(power)


def idf(num_docs: int, df: int) -> float:
    """ln(((num_docs - df) + 0.5) / (df + 0.5) + 1) as DuckDB evaluates it."""
    upper = decimal_to_double((int(num_docs) - int(df)) * 10 + 5, 1)
    lower = decimal_to_double(int(df) * 10 + 5, 1)
    return math.log(upper / lower + 1)


def length_norms(lengths: np.ndarray, avgdl: float) -> np.ndarray:
    """1.2 * (0.25 + 0.75 * (len / avgdl)) per chunk (float64), in DuckDB's order."""
    return K1 * ((1 - B) + B * (lengths.astype(np.float64) / avgdl))


def term_scores(term_idf: float, tf: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """(idf * double(tf * 2.2)) / (double(tf) + norm) per posting (tf int, norms its chunks')."""
    tf64 = tf.astype(np.float64)
    tf22 = (tf64 * 22.0) / 10.0  # tf * 22 exact in float64 below 2^53
    huge = np.flatnonzero(tf > TF_FAST)
    for i in huge.tolist():
        tf22[i] = decimal_to_double(int(tf[i]) * 22, 1)
    return (term_idf * tf22) / (tf64 + norms)


def kahan_add(summed: np.ndarray, err: np.ndarray, value: np.ndarray) -> None:
    """KahanAddInternal, elementwise and in place."""
    diff = value - err
    new = summed + diff
    err[...] = (new - summed) - diff
    summed[...] = new


def round9(x: np.ndarray) -> np.ndarray:
    """DuckDB's round(x, 9) of doubles: std::round(x * 1e9) / 1e9, x when not finite."""
    y = x * SCALE
    t = np.trunc(y)
    t = np.where(np.abs(y - t) >= 0.5, t + np.copysign(1.0, y), t)
    rounded = t / SCALE
    return np.where(np.isfinite(rounded), rounded, x)


def order_margin(sums: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """How far any summation order DuckDB may pick can land from the Kahan sum in term order:
    0 for one term (every order adds it to 0 exactly), else 8 (n + 1) ulps of the sum."""
    return np.where(terms > 1, (terms + 1) * ORDER_ULPS * np.abs(sums), 0.0)


def rounded(sums: np.ndarray, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): round9 of the lowest and highest sums DuckDB may reach from `sums` (Kahan
    in term order) over `terms` terms each; equal where the printed score is determined."""
    margin = order_margin(sums, terms)
    return round9(sums - margin), round9(sums + margin)
