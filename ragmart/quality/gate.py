"""The regression gate: a candidate fails when a metric falls below the baseline's by more than
its tolerance.

The one place the gate's rule lives, for Python and SQL alike: the default tolerances
(:data:`DEFAULT_TOLERANCE`) and the comparison (:func:`regressed`: a drop of exactly the
tolerance passes, whatever the float rounding). ``ragmart publish`` and ``ragmart eval
--compare`` call :func:`gate`; the dbt test ``assert_candidate_does_not_regress`` calls the same
two through the DuckDB functions ``ragmart_gate_tolerance(metric)`` and
``ragmart_gate_regressed(baseline, candidate, tolerance)``, which the dbt-duckdb plugin
registers with :func:`register`. The dbt vars ``eval_tolerance_<metric>`` and the flags
``--tolerance METRIC=VALUE`` override a default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
from duckdb.sqltypes import BOOLEAN, DOUBLE, VARCHAR

from ragmart.quality.metrics import EvalReport

# Largest drop of a metric, candidate below baseline, that the gate lets through; the recall's
# applies to recall@k for any k.
DEFAULT_TOLERANCE: dict[str, float] = {"recall@5": 0.02, "mrr": 0.03, "ndcg@10": 0.03}
TOLERANCE_FUNCTION = "ragmart_gate_tolerance"
REGRESSED_FUNCTION = "ragmart_gate_regressed"

_METRIC = re.compile(r"(recall@[1-9][0-9]*|mrr|ndcg@10)")
_EPSILON = 1e-12  # a drop of exactly the tolerance passes, whatever the float rounding


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: list[str]


def _canonical_metric(name: str) -> str:
    canonical = str(name).strip().lower().replace("_at_", "@")
    if not _METRIC.fullmatch(canonical):
        raise ValueError(
            f"unknown metric {name!r} in the tolerances; use recall@5 (or recall_at_5), mrr, "
            "ndcg@10 (or ndcg_at_10)"
        )
    return canonical



def default_tolerance(metric: str) -> float:
    """The tolerance of `metric` (``recall@5`` or ``recall_at_5``, ``mrr``, ``ndcg@10``) when
    none is given."""
    name = _canonical_metric(metric)
    return DEFAULT_TOLERANCE["recall@5" if name.startswith("recall@") else name]


def regressed(baseline: float, candidate: float, tolerance: float) -> bool:
    """Whether `candidate` fell below `baseline` by more than `tolerance`."""
    return baseline - candidate > tolerance + _EPSILON


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
    """Every gated metric's tolerance: `tolerance` over the defaults (recall@k for any k)."""
    given = {_canonical_metric(name): float(v) for name, v in (tolerance or {}).items()}
    for name, value in given.items():
        if value < 0:
            raise ValueError(f"tolerance of {name} is negative ({value}); use 0 or more")
    return {name: given.get(name, default_tolerance(name))
            for name in (f"recall@{k}", "mrr", "ndcg@10")}


def gate(
    candidate: EvalReport,
    baseline: EvalReport | None,
    tolerance: Mapping[str, float] | None = None,
) -> GateResult:
    """Fail when a candidate metric is below the baseline's by more than its tolerance.

    `tolerance` maps metric names (``recall@5``/``recall_at_5``, ``mrr``, ``ndcg@10``) to the
    largest allowed drop; missing ones default to :func:`default_tolerance`. No baseline:
    passes."""
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
        if regressed(base[name], value, allowed):
            failures.append(
                f"{name} fell from {base[name]:.4f} (baseline {baseline.version or '?'}) to "
                f"{value:.4f} (candidate {candidate.version or '?'}), a drop of "
                f"{base[name] - value:.4f}, more than the tolerance {allowed:.4f}"
            )
    return GateResult(passed=not failures, failures=failures)




def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Make ``ragmart_gate_tolerance(metric varchar) -> double`` (:func:`default_tolerance`) and
    ``ragmart_gate_regressed(baseline, candidate, tolerance double) -> boolean``
    (:func:`regressed`) callable on `conn` and its cursors."""
    conn.create_function(TOLERANCE_FUNCTION, default_tolerance, [VARCHAR], DOUBLE)
    conn.create_function(REGRESSED_FUNCTION, regressed, [DOUBLE, DOUBLE, DOUBLE], BOOLEAN)
