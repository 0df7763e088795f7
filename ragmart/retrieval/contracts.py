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

This module reads and checks the file; each clause (its value's parsing and checks included)
is an object of ragmart.retrieval.clauses, and `Contract` has one field per clause.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragmart.retrieval.clauses import CLAUSES
from ragmart.retrieval.values import clip

CONTRACTS_ENV = "RAGMART_CONTRACTS"
DEFAULT_CONTRACTS_FILE = "retrieval_contracts.yml"

MISSING_GROUPS_POLICIES = ("deny", "allow")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_NAME_RULE = ("the name must be lowercase letters, digits and underscores, starting with a "
              "letter (e.g. policy_answers)")

CONTRACT_KEYS = ("description", *(clause.name for clause in CLAUSES), "access")
ACCESS_KEYS = ("missing_allowed_groups",)
TOP_KEYS = ("version", "defaults", "contracts")


class ContractError(ValueError):
    """A contract file or a contract is invalid; the message names the contract and field."""


class _ContractChecks:
    """What every Contract does on construction: check itself (see `Contract`)."""

    def __post_init__(self) -> None:
        errors = _contract_errors(self)
        if errors:
            raise ContractError("\n".join(errors))


# One named retrieval contract: its name, a description, one field per clause (ragmart.
# retrieval.clauses.CLAUSES, each defaulting to the value that admits everything) and its
# access rule for documents without allowed_groups. Generated from the clause registry, so a
# new clause is a new field without an edit here.
Contract = dataclasses.make_dataclass(
    "Contract",
    [("name", str),
     ("description", str, field(default="")),
     *((clause.name, Any, field(default=clause.default)) for clause in CLAUSES),
     ("missing_allowed_groups", str, field(default="deny"))],
    bases=(_ContractChecks,),
    frozen=True,
)
Contract.__module__ = __name__
Contract.__doc__ = "One named retrieval contract. Every clause is optional except access."


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
            f"unknown retrieval contract {clip(name)!r} in {self.path}; defined contracts: "
            f"{known}.{suggestion}"
        )


def contracts_path(path: str | Path | None = None) -> Path:
    """The contract file: `path`, else $RAGMART_CONTRACTS, else ./retrieval_contracts.yml."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CONTRACTS_ENV) or DEFAULT_CONTRACTS_FILE)


def _contract_errors(contract: Any) -> list[str]:
    """Every problem of an already-typed contract (the YAML loader checks types first)."""
    where = f"contract {clip(contract.name)!r}"
    errors = []
    if not isinstance(contract.name, str) or not _NAME.match(contract.name):
        errors.append(f"{where}: {_NAME_RULE}")
    for clause in CLAUSES:
        errors += [f"{where}, field {clause.name!r}: {problem}"
                   for problem in clause.problems(getattr(contract, clause.name))]
    if contract.missing_allowed_groups not in MISSING_GROUPS_POLICIES:
        errors.append(
            f"{where}, field 'access.missing_allowed_groups': must be deny or allow, got "
            f"{clip(contract.missing_allowed_groups)!r}"
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
            f"{where}: unknown field {clip(key)!r}{suggestion}; allowed fields: "
            f"{', '.join(allowed)}"
        )
    return errors


def _contract_from_mapping(
    name: object, body: object, default_missing: str
) -> tuple[Contract | None, list[str]]:
    where = f"contract {clip(name)!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        return None, [f"{where}: {_NAME_RULE}"]
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        return None, [f"{where}: must be a mapping of clauses, got {type(body).__name__}"]
    errors = _unknown_keys(list(body), CONTRACT_KEYS, where)
    values: dict[str, Any] = {"name": name}

    def field_error(key: str, message: str) -> None:
        errors.append(f"{where}, field {key!r}: {message}, got {clip(repr(body[key]))}")

    if "description" in body:
        if isinstance(body["description"], str):
            values["description"] = body["description"].strip()
        else:
            field_error("description", "must be text")
    for clause in CLAUSES:
        if clause.name not in body:
            continue
        try:
            value = clause.parse(body[clause.name])
        except ValueError as exc:
            field_error(clause.name, str(exc))
            continue
        problems = clause.problems(value)
        errors += [f"{where}, field {clause.name!r}: {problem}" for problem in problems]
        if not problems:
            values[clause.name] = value
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
                    f"got {clip(repr(policy))}"
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
                f"{clip(repr(default_missing))}"
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
