"""What every retrieval contract clause shares: the base class, the dialects and levels its
SQL is written for, and the names the clauses read. The clauses themselves are in
ragmart.retrieval.clauses (the only place a clause is written)."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

DUCKDB = "duckdb"
POSTGRES = "postgres"
DIALECTS = (DUCKDB, POSTGRES)  # one method per dialect on every clause, named after it

# the levels a predicate reads: a document version, a chunk, or a chunk's distance to the query
DOCUMENT, CHUNK, DISTANCE = "document", "chunk", "distance"
LEVELS = (DOCUMENT, CHUNK, DISTANCE)

# A renderer: the SQL expression of a search parameter by name ($name in the Python path, the
# macro's argument in the SQL path; see ragmart.retrieval.sql).
Render = Callable[[str], str]

COMPLETENESS_LEVELS = ("fragment", "paragraph", "section")
# required_metadata names that are columns of the serving set; any other name is a key of the
# producer's metadata (the source columns kept as JSON, see the README's producer contract).
METADATA_COLUMNS = ("title", "document_type", "allowed_groups", "document_updated_at",
                    "section")
CHUNK_METADATA = ("section",)  # checked per chunk; the others per document version

FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Predicate:
    """One boolean SQL predicate of a clause, at one level, and its name in the counts."""

    counted_as: str
    level: str
    sql: str


class Clause(abc.ABC):
    """A contract clause (see the module docstring). Subclasses set the attributes, `parse`,
    `problems` and one SQL method per dialect returning {level: predicate SQL}."""

    name: str
    sql_type: str
    default: Any = None  # the contract's value when the field is left out: admits everything
    macro_default: str = "null"
    clock_bound = False
    # a distance clause (its predicate reads chunks.distance): left out of the eligible set a
    # Retriever remembers, it bounds how far candidate pools go instead (`max_distance`)
    on_distance = False
    # names of the funnel steps per level (default: the clause's name)
    counted_as: ClassVar[dict[str, str]] = {}
    # the caller's own filter on the same clause (ragmart.retrieve(doc_types=...)), counted
    # apart from the contract's under `request_counted_as`; it names values of
    # `hint_column`, so an abstention can name the values the caller may see
    request_option: str | None = None
    request_counted_as: str | None = None
    hint_column: str | None = None

    @abc.abstractmethod
    def parse(self, raw: object) -> Any:
        """The YAML value, typed; ValueError('must be ...') when it cannot be."""

    @abc.abstractmethod
    def problems(self, value: Any) -> list[str]:
        """What is wrong with a typed value (messages that say what to write instead)."""

    def bind(self, value: Any, requested: Sequence[str] | None = None) -> Any:
        """The SQL parameter value for the contract's `value` (and the caller's filter)."""
        return value

    def active(self, bound: Any) -> bool:
        """Whether a bound value restricts anything (an inactive clause admits every row)."""
        return bound is not None

    def max_distance(self, bound: Any) -> float | None:
        """For a distance clause: no row farther than this is eligible (None: no bound)."""
        return None

    def macro_check(self, value: str, dialect: str = DUCKDB) -> tuple[str, str] | None:
        """For the SQL table macro (DuckDB) and the SQL function ragmart.retrieve (Postgres),
        whose caller passes the value itself: SQL in `dialect` that is true when the argument
        `value` is invalid, and the SQL text of what is wrong, in the words of `problems`
        (None: the argument's SQL type is the whole rule)."""
        return None

    def predicates(self, p: Render, dialect: str = DUCKDB, *,
                   value: str | None = None, counted_as: str | None = None) -> list[Predicate]:
        """The clause's SQL in `dialect`, reading its parameter as `value` (default
        p(name); the abstention counts bind the contract's and the caller's values apart)."""
        render = getattr(self, dialect, None) if dialect in DIALECTS else None
        if render is None:
            raise ValueError(f"clause {self.name} has no SQL for the {dialect!r} dialect")
        by_level = render(p, value or p(self.name))
        return [Predicate(counted_as or self.counted_as.get(level, self.name), level, sql)
                for level, sql in by_level.items()]
