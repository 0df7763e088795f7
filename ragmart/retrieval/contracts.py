"""Retrieval contracts: named, declarative rules on what a retrieval may return.

Contracts are declared in one YAML file in the project (``retrieval_contracts.yml``, or
$RAGMART_CONTRACTS). Each contract is a set of clauses, all of which a chunk must satisfy to be
*eligible*; retrieval returns the k nearest eligible chunks, or abstains when none is eligible::

    version: 1
    defaults:
      missing_allowed_groups: deny        # documents without allowed_groups: deny | allow
    contracts:
      policy_answers:
        description: Answers quoting current company policy.
        document_types: [policy]          # allowed document types
        required_metadata: [title, document_updated_at, source_path]
        max_document_age: 365 days        # age of the version (valid_from) at query time
        min_document_version: 1           # document_version (change_seq) at least this
        min_effective_date: 2026-01-01    # the version took effect (valid_from) on/after this
        min_chunk_completeness: paragraph # fragment | paragraph | section
        min_similarity: 0.2               # 1 - cosine distance
        access:
          missing_allowed_groups: deny

Chunk completeness (from the chunker's section_chunk_count, section_chunk_index and
is_split_paragraph):

* ``section``: the chunk holds its whole section (section_chunk_count = 1, not split);
* ``paragraph``: whole paragraphs of a section spread over several chunks (not split);
* ``fragment``: a piece of an over-long paragraph cut on sentence or word boundaries
  (is_split_paragraph), or a chunk whose section position is missing or inconsistent.

A contract admits chunks at or above its ``min_chunk_completeness``
(section > paragraph > fragment).

Access applies to every search, with or without a contract, before any clause: a chunk is
visible when its document's ``allowed_groups`` shares a group with the caller's groups (a
caller without groups is in no group). A document without ``allowed_groups`` (null) follows
``missing_allowed_groups`` (the contract's, else ``defaults:``); an empty list admits nobody.
Only the explicit operator switch (``--all-groups``, ``groups=ALL_GROUPS``) admits everything.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTRACTS_ENV = "RAGMART_CONTRACTS"
DEFAULT_CONTRACTS_FILE = "retrieval_contracts.yml"

COMPLETENESS_LEVELS = ("fragment", "paragraph", "section")
MISSING_GROUPS_POLICIES = ("deny", "allow")
# required_metadata names that are columns of the serving set; any other name is a key of the
# producer's metadata (the source columns kept as JSON, see the README's producer contract).
METADATA_COLUMNS = ("title", "document_type", "allowed_groups", "document_updated_at",
                    "section")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(minutes?|mins?|hours?|h|days?|d|weeks?|w)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"min": 60, "h": 3600, "d": 86400, "w": 604800}

CONTRACT_KEYS = (
    "description", "document_types", "required_metadata", "max_document_age",
    "min_document_version", "min_effective_date", "min_chunk_completeness", "min_similarity",
    "access",
)
ACCESS_KEYS = ("missing_allowed_groups",)
TOP_KEYS = ("version", "defaults", "contracts")


class ContractError(ValueError):
    """A contract file or a contract is invalid; the message names the contract and field."""


@dataclass(frozen=True)
class Contract:
    """One named retrieval contract. Every clause is optional except access."""

    name: str
    description: str = ""
    document_types: Sequence[str] | None = None
    required_metadata: Sequence[str] = ()
    max_document_age: dt.timedelta | None = None
    min_document_version: int | None = None
    min_effective_date: dt.datetime | None = None
    min_chunk_completeness: str = "fragment"
    min_similarity: float | None = None
    missing_allowed_groups: str = "deny"

    def __post_init__(self) -> None:
        errors = _contract_errors(self)
        if errors:
            raise ContractError("\n".join(errors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "document_types": list(self.document_types) if self.document_types else None,
            "required_metadata": list(self.required_metadata),
            "max_document_age": (
                f"{self.max_document_age.total_seconds() / 86400:g} days"
                if self.max_document_age is not None else None
            ),
            "min_document_version": self.min_document_version,
            "min_effective_date": (
                self.min_effective_date.isoformat() if self.min_effective_date else None
            ),
            "min_chunk_completeness": self.min_chunk_completeness,
            "min_similarity": self.min_similarity,
            "access": {"missing_allowed_groups": self.missing_allowed_groups},
        }


@dataclass(frozen=True)
class ContractSet:
    """The contracts of one file, by name."""

    path: Path
    contracts: Mapping[str, Contract] = field(default_factory=dict)
    # `defaults: missing_allowed_groups`: the rule for a search that names no contract
    missing_allowed_groups: str = "deny"

    def get(self, name: str) -> Contract:
        if name in self.contracts:
            return self.contracts[name]
        known = ", ".join(sorted(self.contracts)) or "(none)"
        hint = difflib.get_close_matches(name, list(self.contracts), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ContractError(
            f"unknown retrieval contract {_clip(name)!r} in {self.path}; defined contracts: "
            f"{known}.{suggestion}"
        )


def _clip(value: object, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def contracts_path(path: str | Path | None = None) -> Path:
    """The contract file: `path`, else $RAGMART_CONTRACTS, else ./retrieval_contracts.yml."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CONTRACTS_ENV) or DEFAULT_CONTRACTS_FILE)


def parse_duration(value: object) -> dt.timedelta:
    """'30 days', '12 hours', '90 minutes', '2 weeks' (or a number of days) -> timedelta."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a positive duration")
        return dt.timedelta(days=value)
    if isinstance(value, dt.timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("a duration such as '30 days', '12 hours', '90 minutes' or '2 weeks'")
    amount = float(match.group(1))
    unit = match.group(2).lower()
    key = "min" if unit.startswith("min") else unit[0]
    if amount <= 0:
        raise ValueError("a positive duration")
    return dt.timedelta(seconds=amount * _UNIT_SECONDS[key])


def _as_datetime(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return _as_datetime(dt.datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError("a date or timestamp such as 2026-01-01 or 2026-01-01T09:00:00")


def _contract_errors(contract: Contract) -> list[str]:
    """Every problem of an already-typed contract (the YAML loader checks types first)."""
    where = f"contract {_clip(contract.name)!r}"
    errors = []
    if not isinstance(contract.name, str) or not _NAME.match(contract.name):
        errors.append(
            f"{where}: the name must be lowercase letters, digits and underscores, starting "
            "with a letter (e.g. policy_answers)"
        )
    if contract.document_types is not None and (
        isinstance(contract.document_types, str)
        or not contract.document_types
        or not all(isinstance(t, str) and t for t in contract.document_types)
    ):
        errors.append(
            f"{where}, field 'document_types': must be a non-empty list of document types, "
            "e.g. [policy, handbook]; leave the field out to allow every type"
        )
    for name in contract.required_metadata:
        if not isinstance(name, str) or not _FIELD.match(name):
            errors.append(
                f"{where}, field 'required_metadata': {_clip(name)!r} is not a field name; use "
                f"{', '.join(METADATA_COLUMNS)} or a key of the producer's metadata"
            )
    if contract.max_document_age is not None and (
        not isinstance(contract.max_document_age, dt.timedelta)
        or contract.max_document_age <= dt.timedelta(0)
    ):
        errors.append(f"{where}, field 'max_document_age': must be a positive duration")
    if contract.min_document_version is not None and (
        isinstance(contract.min_document_version, bool)
        or not isinstance(contract.min_document_version, int)
        or contract.min_document_version < 0
    ):
        errors.append(
            f"{where}, field 'min_document_version': must be a non-negative integer (a "
            "change_seq)"
        )
    if contract.min_effective_date is not None and not isinstance(
        contract.min_effective_date, dt.datetime
    ):
        errors.append(f"{where}, field 'min_effective_date': must be a date or timestamp")
    if contract.min_chunk_completeness not in COMPLETENESS_LEVELS:
        errors.append(
            f"{where}, field 'min_chunk_completeness': must be one of "
            f"{', '.join(COMPLETENESS_LEVELS)}, got {_clip(contract.min_chunk_completeness)!r}"
        )
    if contract.min_similarity is not None and (
        isinstance(contract.min_similarity, bool)
        or not isinstance(contract.min_similarity, int | float)
        or not -1.0 <= float(contract.min_similarity) <= 1.0
    ):
        errors.append(
            f"{where}, field 'min_similarity': must be a number between -1 and 1 "
            "(1 - cosine distance)"
        )
    if contract.missing_allowed_groups not in MISSING_GROUPS_POLICIES:
        errors.append(
            f"{where}, field 'access.missing_allowed_groups': must be deny or allow, got "
            f"{_clip(contract.missing_allowed_groups)!r}"
        )
    return errors


def _unknown_keys(keys: Sequence[object], allowed: Sequence[str], where: str) -> list[str]:
    errors = []
    for key in keys:
        if key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), list(allowed), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        errors.append(
            f"{where}: unknown field {_clip(key)!r}{suggestion}; allowed fields: "
            f"{', '.join(allowed)}"
        )
    return errors


def _contract_from_mapping(
    name: object, body: object, default_missing: str
) -> tuple[Contract | None, list[str]]:
    where = f"contract {_clip(name)!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        return None, [
            f"{where}: the name must be lowercase letters, digits and underscores, starting "
            "with a letter (e.g. policy_answers)"
        ]
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        return None, [f"{where}: must be a mapping of clauses, got {type(body).__name__}"]
    errors = _unknown_keys(list(body), CONTRACT_KEYS, where)
    values: dict[str, Any] = {"name": name}

    def field_error(key: str, message: str) -> None:
        errors.append(f"{where}, field {key!r}: {message}, got {_clip(repr(body[key]))}")

    if "description" in body:
        if isinstance(body["description"], str):
            values["description"] = body["description"].strip()
        else:
            field_error("description", "must be text")
    if "document_types" in body:
        types = body["document_types"]
        if isinstance(types, list) and types and all(isinstance(t, str) and t for t in types):
            values["document_types"] = tuple(types)
        else:
            field_error("document_types", "must be a non-empty list of document types")
    if "required_metadata" in body:
        fields = body["required_metadata"]
        if isinstance(fields, list) and all(isinstance(f, str) for f in fields):
            values["required_metadata"] = tuple(fields)
            errors += [
                f"{where}, field 'required_metadata': {_clip(f)!r} is not a field name; use "
                f"{', '.join(METADATA_COLUMNS)} or a key of the producer's metadata"
                for f in fields if not _FIELD.match(f)
            ]
        else:
            field_error("required_metadata", "must be a list of field names")
    if "max_document_age" in body:
        try:
            values["max_document_age"] = parse_duration(body["max_document_age"])
        except ValueError as exc:
            field_error("max_document_age", f"must be {exc}")
    if "min_document_version" in body:
        version = body["min_document_version"]
        if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
            values["min_document_version"] = version
        else:
            field_error("min_document_version", "must be a non-negative integer (a change_seq)")
    if "min_effective_date" in body:
        try:
            values["min_effective_date"] = _as_datetime(body["min_effective_date"])
        except ValueError as exc:
            field_error("min_effective_date", f"must be {exc}")
    if "min_chunk_completeness" in body:
        level = body["min_chunk_completeness"]
        if level in COMPLETENESS_LEVELS:
            values["min_chunk_completeness"] = level
        else:
            field_error("min_chunk_completeness",
                        f"must be one of {', '.join(COMPLETENESS_LEVELS)}")
    if "min_similarity" in body:
        value = body["min_similarity"]
        if isinstance(value, int | float) and not isinstance(value, bool) and -1 <= value <= 1:
            values["min_similarity"] = float(value)
        else:
            field_error("min_similarity", "must be a number between -1 and 1")
    values["missing_allowed_groups"] = default_missing
    if "access" in body:
        access = body["access"]
        if not isinstance(access, Mapping):
            field_error("access", "must be a mapping, e.g. {missing_allowed_groups: deny}")
        else:
            errors += _unknown_keys(list(access), ACCESS_KEYS, f"{where}, field 'access'")
            policy = access.get("missing_allowed_groups", default_missing)
            if policy in MISSING_GROUPS_POLICIES:
                values["missing_allowed_groups"] = policy
            else:
                errors.append(
                    f"{where}, field 'access.missing_allowed_groups': must be deny or allow, "
                    f"got {_clip(repr(policy))}"
                )
    if errors:
        return None, errors
    try:
        return Contract(**values), []
    except ContractError as exc:
        return None, str(exc).split("\n")


def parse_contracts(document: object, *, path: str | Path = DEFAULT_CONTRACTS_FILE) -> ContractSet:
    """Validate a parsed contract file; every problem is reported at once."""
    errors: list[str] = []
    contracts: dict[str, Contract] = {}
    if not isinstance(document, Mapping):
        raise ContractError(
            f"{path}: must be a mapping with `version: 1` and `contracts:`, got "
            f"{type(document).__name__}"
        )
    errors += _unknown_keys(list(document), TOP_KEYS, str(path))
    if document.get("version") != 1:
        errors.append(f"{path}: `version: 1` is required (got {document.get('version')!r})")
    defaults = document.get("defaults") or {}
    default_missing = "deny"
    if not isinstance(defaults, Mapping):
        errors.append(f"{path}: `defaults` must be a mapping")
    else:
        errors += _unknown_keys(list(defaults), ACCESS_KEYS, f"{path}, defaults")
        default_missing = defaults.get("missing_allowed_groups", "deny")
        if default_missing not in MISSING_GROUPS_POLICIES:
            errors.append(
                f"{path}, defaults, field 'missing_allowed_groups': must be deny or allow, got "
                f"{_clip(repr(default_missing))}"
            )
            default_missing = "deny"
    body = document.get("contracts")
    if not isinstance(body, Mapping) or not body:
        errors.append(f"{path}: `contracts` must map contract names to their clauses")
        body = {}
    for name, clauses in body.items():
        contract, problems = _contract_from_mapping(name, clauses, default_missing)
        errors += [f"{path}: {problem}" for problem in problems]
        if contract is not None:
            contracts[contract.name] = contract
    if errors:
        raise ContractError("invalid retrieval contracts:\n  " + "\n  ".join(errors))
    return ContractSet(path=Path(path), contracts=contracts,
                       missing_allowed_groups=default_missing)


def load_contracts(path: str | Path | None = None) -> ContractSet:
    """Read and validate the contract file (see `contracts_path`)."""
    from ragmart.safe_yaml import YAMLLimitError, load_yaml

    resolved = contracts_path(path)
    if not resolved.is_file():
        raise ContractError(
            f"retrieval contract file {resolved} not found; create it (see the README, "
            f"'Retrieval contracts and freshness') or set {CONTRACTS_ENV}"
        )
    try:
        document = load_yaml(resolved.read_text(encoding="utf-8"), str(resolved))
    except YAMLLimitError as exc:
        raise ContractError(str(exc)) from None
    return parse_contracts(document, path=resolved)
