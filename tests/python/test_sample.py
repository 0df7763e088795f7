"""Tests for tools/sample.py: the deterministic generator of the bundled sample landing zone."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ragmart.ingest.cdc import parse_landing_file
from tools.sample import build_sample_landing, main

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DOCS = ROOT / "tests" / "fixtures" / "cdc" / "documents"
SAMPLE_DOCS = ROOT / "sample" / "documents"
SAMPLE_LANDING = ROOT / "sample" / "landing"


# --------------------------------------------------------------------------- helpers


def landing_files(landing: Path) -> dict[str, bytes]:
    return {
        p.relative_to(landing).as_posix(): p.read_bytes()
        for p in sorted(landing.rglob("*"))
        if p.is_file()
    }


def parse_all(landing: Path) -> dict[str, list[dict]]:
    return {
        rel: parse_landing_file(rel, data)
        for rel, data in landing_files(landing).items()
        if rel != "EXPECTED.json"
    }


def replay(parsed: dict[str, list[dict]]) -> dict[str, dict]:
    """Order by change_seq, dedupe identical (document_id, change_seq), apply."""
    events: dict[tuple[str, int], dict] = {}
    for rows in parsed.values():
        for row in rows:
            key = (row["document_id"], row["change_seq"])
            seen = events.get(key)
            if seen is not None:
                for column in ("op", "title", "content", "allowed_groups", "commit_ts"):
                    if column == "content" and row["op"] == "D":
                        continue
                    assert seen[column] == row[column], (key, column)
            events.setdefault(key, row)
    state: dict[str, dict] = {}
    for key in sorted(events, key=lambda k: k[1]):
        ev = events[key]
        state[ev["document_id"]] = {
            "deleted": ev["op"] == "D",
            "document_type": ev["document_type"],
            "title": ev["title"],
            "content_sha256": None
            if ev["op"] == "D"
            else hashlib.sha256(ev["content"].encode()).hexdigest(),
            "change_seq": ev["change_seq"],
            "allowed_groups": ev["allowed_groups"],
            "updated_at": ev["updated_at"].strftime("%Y-%m-%d %H:%M:%S"),
        }
    return state


def blocks(content: str) -> list[str]:
    return content.split("\n\n")


def changed_blocks(old: str, new: str) -> int:
    a, b = blocks(old), blocks(new)
    assert len(a) == len(b), "an edit must not add or remove paragraphs"
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)


def write_long_document(directory: Path) -> str:
    paragraphs = [
        f"Paragraph {i} explains rule number {i} of the long handbook in plain words, so that "
        f"every reader understands what rule {i} asks of them and why it matters to the team."
        for i in range(1, 80)
    ]
    body = "# Long Handbook\n\n" + "\n\n".join(paragraphs) + "\n"
    (directory / "zz-long-handbook.md").write_text(
        "---\ndocument_id: zz-long-handbook\ndocument_type: handbook\n"
        "title: Long Handbook\n---\n" + body,
        encoding="utf-8",
    )
    return body


@pytest.fixture(scope="module")
def fixture_landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    docs = tmp_path_factory.mktemp("docs")
    for path in FIXTURE_DOCS.glob("*.md"):
        shutil.copy(path, docs / path.name)
    write_long_document(docs)
    out = tmp_path_factory.mktemp("landing")
    expected = build_sample_landing(docs, out)
    return out, expected


# --------------------------------------------------------------------------- determinism


def test_generator_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "landing", tmp_path / "b" / "elsewhere"
    build_sample_landing(FIXTURE_DOCS, first)
    build_sample_landing(FIXTURE_DOCS, second)
    files_a, files_b = landing_files(first), landing_files(second)
    assert sorted(files_a) == sorted(files_b)
    for name in files_a:
        assert files_a[name] == files_b[name], name
    build_sample_landing(FIXTURE_DOCS, first)  # re-running in place changes nothing
    assert landing_files(first) == files_a


def test_generator_removes_stale_landing_files(tmp_path: Path) -> None:
    out = tmp_path / "landing"
    (out / "dms").mkdir(parents=True)
    (out / "dms" / "0050_stale.csv").write_text("Op\n", encoding="utf-8")
    (out / "keep.txt").write_text("not ours\n", encoding="utf-8")
    build_sample_landing(FIXTURE_DOCS, out)
    assert not (out / "dms" / "0050_stale.csv").exists()
    assert (out / "keep.txt").exists()


def test_returned_dict_is_what_expected_json_holds(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    assert json.loads((out / "EXPECTED.json").read_text(encoding="utf-8")) == expected


# --------------------------------------------------------------------------- content


def test_every_generated_file_parses_without_quarantine(
    fixture_landing: tuple[Path, dict],
) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    assert sorted(parsed) == sorted(b["file"] for b in expected["batches"])
    for rel, rows in parsed.items():
        assert rows, rel
        assert [r["quarantine_reason"] for r in rows if r["quarantine_reason"]] == [], rel


def test_replaying_events_ends_in_expected(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    assert replay(parse_all(out)) == expected["documents"]


def test_batch_descriptions_match_the_files(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    for batch in expected["batches"]:
        rows = parsed[batch["file"]]
        assert batch["layout"] == batch["file"].split("/")[0]
        assert [
            {"document_id": r["document_id"], "op": r["op"], "change_seq": r["change_seq"]}
            for r in rows
        ] == batch["events"]
        assert batch["scenarios"] and batch["description"]


def _by_scenario(expected: dict, scenario: str) -> list[dict]:
    return [b for b in expected["batches"] if scenario in b["scenarios"]]


def test_scenarios_are_all_exercised(fixture_landing: tuple[Path, dict]) -> None:
    _out, expected = fixture_landing
    batches = expected["batches"]
    assert len(batches) >= 6
    scenarios = {s for b in batches for s in b["scenarios"]}
    assert {
        "initial_load",
        "edit",
        "long_document_edit",
        "insert",
        "delete",
        "rename",
        "late_arrival",
        "duplicate_replay",
        "cross_layout_replay",
    } <= scenarios
    for scenario in ("initial_load", "edit", "insert", "delete"):
        layouts = {b["layout"] for b in _by_scenario(expected, scenario)}
        assert layouts == {"dms", "debezium"}, scenario
    assert any(b["file"].endswith(".parquet") for b in _by_scenario(expected, "insert"))
    names = [b["file"].split("/")[1] for b in batches]
    assert len(set(names)) == len(names)


def test_initial_load_holds_back_two_documents(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    initial = _by_scenario(expected, "initial_load")
    loaded = {r["document_id"] for b in initial for r in parsed[b["file"]]}
    assert {r["source_op"] for b in initial for r in parsed[b["file"]]} <= {None, "I", "r", "c"}
    sources = {p.stem for p in FIXTURE_DOCS.glob("*.md")} | {"zz-long-handbook"}
    held_back = sources - loaded
    assert len(held_back) == 2
    inserts = [r for b in _by_scenario(expected, "insert") for r in parsed[b["file"]]]
    assert {r["document_id"] for r in inserts if r["op"] == "I"} >= held_back
    assert any(r["source_file"].endswith(".parquet") for r in inserts)


def test_edits_change_exactly_one_paragraph(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    events = {(r["document_id"], r["change_seq"]): r for rows in parsed.values() for r in rows}
    history: dict[str, list[dict]] = defaultdict(list)
    for key in sorted(events, key=lambda k: k[1]):
        history[key[0]].append(events[key])
    edited = set()
    for doc_id, evs in history.items():
        for before, after in zip(evs, evs[1:], strict=False):
            if after["op"] == "U":
                assert changed_blocks(before["content"], after["content"]) == 1, doc_id
                edited.add(doc_id)
    assert len(edited) >= 3
    assert "zz-long-handbook" in edited  # the only document over 2,000 words
    long_batches = _by_scenario(expected, "long_document_edit")
    assert any(
        r["document_id"] == "zz-long-handbook" for b in long_batches for r in parsed[b["file"]]
    )


def test_deletes_and_rename(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    docs = expected["documents"]
    for batch in _by_scenario(expected, "delete"):
        for row in parsed[batch["file"]]:
            if row["op"] != "D":
                continue
            assert row["title"] and row["document_type"]  # last values carried
            if batch["layout"] == "dms":
                assert not row["content"]
            else:
                line = (
                    (out / batch["file"])
                    .read_text(encoding="utf-8")
                    .splitlines()[row["source_line"] - 1]
                )
                envelope = json.loads(line)
                envelope = envelope.get("payload", envelope)
                assert envelope["after"] is None and envelope["before"]
    (rename,) = _by_scenario(expected, "rename")
    rows = parsed[rename["file"]]
    (gone,) = [r for r in rows if r["op"] == "D"]
    (new,) = [r for r in rows if r["op"] == "I"]
    assert gone["document_id"] != new["document_id"]
    assert docs[gone["document_id"]]["deleted"] is True
    assert docs[new["document_id"]]["deleted"] is False
    last_live = max(
        (
            r
            for rs in parsed.values()
            for r in rs
            if r["document_id"] == gone["document_id"] and r["op"] != "D"
        ),
        key=lambda r: r["change_seq"],
    )
    assert new["content"] == last_live["content"]
    assert docs[new["document_id"]]["allowed_groups"] == last_live["allowed_groups"]
    deleted = {d for d, v in docs.items() if v["deleted"]}
    assert len(deleted) >= 2  # the delete and the rename's old id


def test_late_arrival_does_not_win_but_new_old_event_applies(
    fixture_landing: tuple[Path, dict],
) -> None:
    out, expected = fixture_landing
    parsed = parse_all(out)
    (late,) = _by_scenario(expected, "late_arrival")
    assert late["file"].split("/")[1] == max(b["file"].split("/")[1] for b in expected["batches"])
    late_rows = parsed[late["file"]]
    max_seq_elsewhere = defaultdict(int)
    for rel, rows in parsed.items():
        if rel != late["file"]:
            for r in rows:
                max_seq_elsewhere[r["document_id"]] = max(
                    max_seq_elsewhere[r["document_id"]], r["change_seq"]
                )
    losing = [r for r in late_rows if r["change_seq"] < max_seq_elsewhere[r["document_id"]]]
    winning = [r for r in late_rows if r["change_seq"] > max_seq_elsewhere[r["document_id"]]]
    assert losing and winning
    docs = expected["documents"]
    for r in losing:
        assert docs[r["document_id"]]["change_seq"] != r["change_seq"]
        assert (
            docs[r["document_id"]]["content_sha256"]
            != hashlib.sha256(r["content"].encode()).hexdigest()
        )
    for r in winning:
        assert docs[r["document_id"]]["change_seq"] == r["change_seq"]
        # a genuinely new event on a document nothing but the initial load touched
        others = [
            x
            for rel, rs in parsed.items()
            if rel != late["file"]
            for x in rs
            if x["document_id"] == r["document_id"]
        ]
        assert [x["op"] for x in others] == ["I"]
    # the late batch's sequences are older than a newer batch's, though its name sorts last
    assert max(r["change_seq"] for r in late_rows) < max(
        r["change_seq"] for rows in parsed.values() for r in rows
    )


def test_duplicate_replays(fixture_landing: tuple[Path, dict]) -> None:
    out, expected = fixture_landing
    files = landing_files(out)
    parsed = parse_all(out)
    (copy,) = _by_scenario(expected, "duplicate_replay")
    (reencoded,) = _by_scenario(expected, "cross_layout_replay")
    originals = [
        rel for rel, data in files.items() if data == files[copy["file"]] and rel != copy["file"]
    ]
    assert len(originals) == 1
    original = originals[0]
    assert original.split("/")[1] < copy["file"].split("/")[1]
    assert reencoded["layout"] != copy["layout"]

    def events(rel: str) -> list[tuple]:
        return [
            (r["document_id"], r["change_seq"], r["op"], r["commit_ts"], r["content"])
            for r in parsed[rel]
        ]

    assert events(reencoded["file"]) == events(original)


def test_same_document_in_both_layouts_and_sequences(fixture_landing: tuple[Path, dict]) -> None:
    out, _expected = fixture_landing
    parsed = parse_all(out)
    layouts = defaultdict(set)
    by_seq: dict[int, tuple] = {}
    for rows in parsed.values():
        for r in rows:
            layouts[r["document_id"]].add(r["source_layout"])
            key = (r["document_id"], r["op"], r["commit_ts"])
            assert by_seq.setdefault(r["change_seq"], key) == key  # one event per sequence
    assert any(v == {"dms", "debezium"} for v in layouts.values())
    seqs = sorted(by_seq)
    assert seqs == list(range(1, len(seqs) + 1))
    commit_times = [by_seq[s][2] for s in seqs]
    assert commit_times == sorted(commit_times)
    assert str(commit_times[0]).startswith("2026-11-02")
    assert len(set(commit_times)) == len(commit_times)


def test_allowed_groups_are_carried(fixture_landing: tuple[Path, dict]) -> None:
    _out, expected = fixture_landing
    docs = expected["documents"]
    assert docs["acme-leave"]["allowed_groups"] == ["hr", "managers"]
    assert docs["acme-passwords"]["allowed_groups"] == ["all-staff", "engineering"]
    assert docs["acme-onboarding"]["allowed_groups"] is None


def test_content_is_the_body_after_front_matter(fixture_landing: tuple[Path, dict]) -> None:
    out, _expected = fixture_landing
    rows = [r for rs in parse_all(out).values() for r in rs if r["op"] == "I"]
    for r in rows:
        assert not r["content"].startswith("---")
        assert r["content"].startswith("# ")


# --------------------------------------------------------------------------- inputs and CLI


def test_too_few_documents_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for path in sorted(FIXTURE_DOCS.glob("*.md"))[:3]:
        shutil.copy(path, docs / path.name)
    with pytest.raises(ValueError, match=r"at least 6 .*found 3"):
        build_sample_landing(docs, tmp_path / "out")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# No front matter\n", "front matter"),
        ("---\ndocument_id: x\n# never closed\n", "front matter"),
        ("---\ndocument_type: policy\ntitle: T\n---\nbody\n", "document_id"),
        ("---\n[unbalanced\n---\nbody\n", "YAML"),
    ],
)
def test_bad_front_matter_is_an_error_naming_the_file(
    tmp_path: Path, text: str, match: str
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURE_DOCS, docs)
    (docs / "broken.md").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        build_sample_landing(docs, tmp_path / "out")
    assert "broken.md" in str(info.value)


def test_duplicate_document_id_is_an_error(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURE_DOCS, docs)
    shutil.copy(docs / "acme-leave.md", docs / "acme-leave-copy.md")
    with pytest.raises(ValueError, match="acme-leave"):
        build_sample_landing(docs, tmp_path / "out")


def test_cli_writes_the_landing_zone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "landing"
    assert main(["--documents", str(FIXTURE_DOCS), "--out", str(out)]) == 0
    assert (out / "EXPECTED.json").is_file()
    assert "batches" in capsys.readouterr().out


def test_readme_command_regenerates_from_the_repository_root(tmp_path: Path) -> None:
    """`python -m tools.sample` (the README's command) runs from the repository root and writes
    what build_sample_landing writes."""
    out = tmp_path / "landing"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.sample", "--documents", str(FIXTURE_DOCS), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    direct = tmp_path / "direct"
    build_sample_landing(FIXTURE_DOCS, direct)
    assert landing_files(out) == landing_files(direct)


# --------------------------------------------------------------------------- bundled sample


def test_bundled_sample_documents_exercise_a_long_edit(tmp_path: Path) -> None:
    if len(list(SAMPLE_DOCS.glob("*.md"))) < 6:
        pytest.skip(f"{SAMPLE_DOCS} holds fewer than 6 documents")
    expected = build_sample_landing(SAMPLE_DOCS, tmp_path / "landing")
    parsed = parse_all(tmp_path / "landing")
    assert replay(parsed) == expected["documents"]
    assert all(r["quarantine_reason"] is None for rows in parsed.values() for r in rows)
    (long_batch,) = [b for b in expected["batches"] if "long_document_edit" in b["scenarios"]]
    assert "words" in long_batch["description"]
    long_ids = {
        p.stem
        for p in SAMPLE_DOCS.glob("*.md")
        if len(p.read_text(encoding="utf-8").split("\n---\n", 1)[-1].split()) > 2000
    }
    if long_ids:
        edited = {e["document_id"] for e in long_batch["events"] if e["op"] == "U"}
        assert edited & long_ids


def test_bundled_landing_is_up_to_date(tmp_path: Path) -> None:
    """sample/landing must be what the generator makes from sample/documents today."""
    if not (SAMPLE_LANDING / "EXPECTED.json").is_file():
        pytest.skip("sample/landing not generated yet (python -m tools.sample)")
    build_sample_landing(SAMPLE_DOCS, tmp_path / "landing")
    fresh = landing_files(tmp_path / "landing")
    bundled = {k: v for k, v in landing_files(SAMPLE_LANDING).items() if k in fresh}
    assert sorted(bundled) == sorted(fresh), "regenerate: python -m tools.sample"
    stale = [k for k in fresh if fresh[k] != bundled[k]]
    assert stale == [], "regenerate: python -m tools.sample --documents sample/documents"
