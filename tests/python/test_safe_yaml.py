"""User YAML is loaded within bounds: alias bombs and deep nesting are refused with one line.

Through the CLI a user runs (`ragmart retrieve --contracts FILE`, in process), with tracemalloc
for what a refused file may cost.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import duckdb
import pytest

from ragmart.cli import main as cli
from ragmart.exit_codes import Exit
from ragmart.safe_yaml import MAX_DEPTH, MAX_EXPANDED_NODES, load_yaml


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic billion laughs: each level a list of `width` aliases of the one before."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels):
        items = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{items}]")
    lines.append(f"contracts: {{bomb: {{doc_types: *a{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def deep(levels: int) -> str:
    return "contracts: " + "[" * levels + "]" * levels + "\n"


def empty_database(tmp_path: Path) -> Path:
    """A real DuckDB file with nothing in it: the CLI checks --db first, the contract file is
    what fails."""
    path = tmp_path / "empty.duckdb"
    if not path.exists():
        duckdb.connect(str(path)).close()
    return path


def retrieve_argv(contracts: Path, tmp_path: Path) -> list[str]:
    """`ragmart retrieve` with this contract file, on an empty database."""
    return ["retrieve", "anything", "--contract", "bomb", "--contracts", str(contracts),
            "--db", str(empty_database(tmp_path))]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        pytest.param(alias_bomb(), f"expand to more than {MAX_EXPANDED_NODES:,} nodes",
                     id="aliases"),
        pytest.param(deep(20_000), f"nested more than {MAX_DEPTH} levels", id="deep-20000"),
    ],
)
def test_retrieve_refuses_a_hostile_contract_file_quickly_in_one_line(
    tmp_path: Path, capsys, text: str, expect: str
) -> None:
    contracts = tmp_path / "contracts.yml"
    contracts.write_text(text)
    assert len(text.encode()) < 1024 or text.startswith("contracts: [[")
    started = time.monotonic()
    code = cli.main(retrieve_argv(contracts, tmp_path))
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == Exit.USAGE, err
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(contracts) in lines[0] and expect in lines[0]
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_a_refused_alias_bomb_costs_at_most_a_few_megabytes(tmp_path: Path, capsys) -> None:
    contracts = tmp_path / "contracts.yml"
    contracts.write_text(alias_bomb())
    assert contracts.stat().st_size < 1024
    argv = retrieve_argv(contracts, tmp_path)
    warm = tmp_path / "warm.yml"  # imports are not what is measured
    warm.write_text("contracts: {")
    cli.main([*argv[:4], "--contracts", str(warm)])
    tracemalloc.start()
    try:
        code = cli.main(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == Exit.USAGE
    assert "expand to more than" in capsys.readouterr().err
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MB"


@pytest.mark.parametrize(
    "text",
    [
        # aliases used as YAML means them: shared defaults, merged keys
        "defaults: &d {max_age: 30d}\ncontracts:\n  a: *d\n  b: {<<: *d, doc_types: [policy]}\n",
        "contracts:\n  a: {doc_types: &t [policy, runbook]}\n  b: {doc_types: *t}\n",
        deep(MAX_DEPTH - 1),
    ],
    ids=["anchor-merge", "anchor-list", "deep-within-bound"],
)
def test_ordinary_aliases_and_nesting_load_as_safe_load_does(text: str) -> None:
    import yaml

    assert load_yaml(text, "x.yml") == yaml.safe_load(text)


def test_the_expansion_bound_is_exact_and_names_the_source() -> None:
    # a: a list of m scalars (m + 1 nodes); b: a list of w aliases of it (1 + w(m + 1));
    # c: p scalars (1 + p); with the mapping and its three keys, 6 + (w + 1)(m + 1) + p nodes,
    # from about 1,200 written ones
    def document(m: int, w: int, p: int) -> str:
        return (f"a: &l [{', '.join(['x'] * m)}]\nb: [{', '.join(['*l'] * w)}]\n"
                f"c: [{', '.join(['y'] * p)}]\n")

    m, w = 99, 998
    p = MAX_EXPANDED_NODES - 6 - (w + 1) * (m + 1)
    assert p > 0
    load_yaml(document(m, w, p), "ok.yml")  # exactly the bound
    with pytest.raises(ValueError, match=r"^over\.yml: its aliases expand"):
        load_yaml(document(m, w, p + 1), "over.yml")  # one node more
