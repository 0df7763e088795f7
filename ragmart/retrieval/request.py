"""A search request: who asks (groups), what they ask (k, a contract, a document-type filter,
a moment), the checks on those inputs, and the parameter values a search binds from them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragmart.lineage import utc_now
from ragmart.retrieval.clauses import CLAUSES
from ragmart.retrieval.contracts import Contract
from ragmart.retrieval.results import RetrievalError
from ragmart.retrieval.values import json_list

MAX_K = 2**63 - 1  # k is a bigint in the search SQL (limit $k)
MISSING_GROUPS_DEFAULT = "deny"


class AllGroups:
    """The type of ``ALL_GROUPS``: the operator switch that admits every document whatever its
    allowed_groups (evaluation, debugging). Never a default: a caller that passes no groups is
    in no group."""

    _instance: AllGroups | None = None

    def __new__(cls) -> AllGroups:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_GROUPS"


ALL_GROUPS = AllGroups()
# the caller's groups: a list (possibly empty), None (no group) or ALL_GROUPS (operator)
Groups = Sequence[str] | AllGroups | None


def check_question(question: object) -> str:
    """`question` when it is text to search for; RetrievalError when it is empty or not text
    UTF-8 can hold (a lone surrogate, e.g. JSON's "\\ud800" escape: the full-text index and
    the providers would fail on it)."""
    if not isinstance(question, str) or not question.strip():
        raise RetrievalError("the question is empty; pass the text to search for")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RetrievalError(
            f"the question is not valid Unicode text: a lone surrogate "
            f"{question[exc.start]!r} at character {exc.start}; send the text itself") from None
    return question


def check_inputs(k: int, groups: Groups, doc_types: Sequence[str] | None,
                 as_of: dt.datetime | None) -> None:
    """RetrievalError naming the first input a search cannot take, and what to write."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise RetrievalError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise RetrievalError(f"k must be at most {MAX_K} (a bigint in SQL), got {k}; ask for "
                             "fewer chunks")
    checked = (("groups", None if groups is ALL_GROUPS else groups,
                " (or ALL_GROUPS, the operator switch)"), ("doc_types", doc_types, ""))
    for name, values, hint in checked:
        if values is not None and (isinstance(values, str | AllGroups) or not all(
            isinstance(v, str) for v in values
        )):
            raise RetrievalError(
                f"{name} must be a list of strings, e.g. ['hr', 'managers']{hint}")
    if as_of is not None and not isinstance(as_of, dt.datetime):
        raise RetrievalError("as_of must be a datetime (naive UTC), e.g. datetime(2026, 11, 2)")


def floats(query_vector: np.ndarray | Sequence[float]) -> list[float]:
    """The query vector as the float32 values a search binds, as Python floats (exact)."""
    return np.asarray(query_vector, dtype=np.float32).reshape(-1).astype(np.float64).tolist()


def parameters(
    vector: list[float],
    *,
    k: int,
    contract: Contract | None,
    groups: Groups,
    doc_types: Sequence[str] | None,
    as_of: dt.datetime | None,
    now: dt.datetime | None,
    missing_allowed_groups: str = MISSING_GROUPS_DEFAULT,
) -> dict[str, Any]:
    """The search's parameter values: the request's, then one per clause (the contract's
    value, else the clause's default, which admits everything). Groups None is no group."""
    params: dict[str, Any] = {
        # repr() round-trips each float32 exactly
        "query_vector": "[" + ",".join(map(repr, vector)) + "]",
        "k": int(k),
        "groups": json_list([] if groups is None or groups is ALL_GROUPS else groups),
        "all_groups": groups is ALL_GROUPS,
        "missing_allowed_groups": (contract.missing_allowed_groups if contract
                                   else missing_allowed_groups),
        "as_of": as_of,
        "now": now or utc_now(),
    }
    options = {"doc_types": doc_types}  # the caller's own filters, by clause.request_option
    for clause in CLAUSES:
        value = getattr(contract, clause.name) if contract else clause.default
        requested = options[clause.request_option] if clause.request_option else None
        params[clause.name] = clause.bind(value, requested)
    return params
