"""The exit codes of every `ragmart` command: one table, here and in the README.

Scripts branch on them, so each outcome has its own code and a code never changes meaning:

| code | name           | meaning                                                               |
|------|----------------|-----------------------------------------------------------------------|
| 0    | OK             | the command did what was asked                                        |
| 1    | INTERNAL       | an unexpected internal error (a defect: please report it)             |
| 2    | USAGE          | a usage or input error: a bad argument, file, id or missing database  |
| 3    | ABSTAINED      | retrieval abstained: nothing the caller may see satisfies the request |
| 4    | GATE_REFUSED   | the quality gate refused a candidate: publish, eval --compare, build  |
| 5    | CHECK_FAILED   | a check failed: freshness --check, any other failed node of build     |
| 6    | DEGRADED       | answered in part: a server it reads is unreachable (versions: PG)     |
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    ABSTAINED = 3
    GATE_REFUSED = 4
    CHECK_FAILED = 5
    DEGRADED = 6
