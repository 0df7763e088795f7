"""Tests for the versioned Markdown chunker (ragmart.chunking)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragmart.chunking.chunkers import CHUNKER_VERSION, Chunk, chunk_document
from ragmart.chunking.markdown import clean_markdown
from ragmart.chunking.sections import SECTION_TYPES, classify_section

SAMPLE_DOCS = Path(__file__).resolve().parents[2] / "sample" / "documents"


def words(n: int, word: str = "word") -> str:
    """A sentence-free run of ``n`` distinct-looking words."""
    return " ".join(f"{word}{i}" for i in range(n))


def sentence_paragraph(n_words: int, per_sentence: int = 10, stem: str = "w") -> str:
    """``n_words`` words cut into capitalised sentences of ``per_sentence`` words."""
    toks = [f"{stem}{i}" for i in range(n_words)]
    out = []
    for start in range(0, n_words, per_sentence):
        sent = toks[start : start + per_sentence]
        sent[0] = sent[0].capitalize()
        out.append(" ".join(sent) + ".")
    return " ".join(out)


def body_of(chunk: Chunk) -> str:
    """The chunk text without its ``title\\nsection\\n\\n`` prefix."""
    return chunk.text.split("\n\n", 1)[1]


# --------------------------------------------------------------------------- cleaning


def test_clean_markdown_realistic_policy_page():
    raw = (
        "---\ntitle: X\nlayout: sheet\n---\n"
        '<figure class="c"><img src="{% asset_path a.png %}"></figure>\n\n'
        "# X\n\nBody &amp; more"
    )
    front, cleaned = clean_markdown(raw)
    assert front == {"title": "X", "layout": "sheet"}
    assert cleaned == "# X\n\nBody & more"


def test_clean_markdown_front_matter_tolerates_odd_lines():
    raw = (
        "---\n"
        "title: 'Quoted: title'\n"
        "allowed_groups: [all-staff]\n"
        "tags:\n"
        "  - a\n"
        "  - b\n"
        "this line is not yaml at all\n"
        "# a comment\n"
        "empty:\n"
        "---\n"
        "Text\n"
    )
    front, cleaned = clean_markdown(raw)
    assert front["title"] == "Quoted: title"
    assert front["allowed_groups"] == "[all-staff]"
    assert front["tags"] == ""
    assert front["empty"] == ""
    assert "a comment" not in front
    assert cleaned == "Text"


def test_clean_markdown_unclosed_front_matter_is_content():
    front, cleaned = clean_markdown("---\ntitle: X\n\nno closing fence")
    assert front == {}
    assert "no closing fence" in cleaned


def test_clean_markdown_html_liquid_and_whitespace():
    raw = (
        "Intro{{ page.note }} text   \r\n"
        "{% comment %}secret {{ x }} stuff{% endcomment %}"
        "<script>var x = '<p>hidden</p>';</script>"
        "<style>.a { color: red }</style>"
        "<!-- a comment\nover lines -->"
        "<div><p>First&nbsp;para</p><p>Second &lt;para&gt;</p></div>\r\n"
        "line one<br>line two<br/>line three\n"
        "\n\n\n\n\n"
        "<span class='x'>inline</span> kept &copy; 2024\n"
        '<h2 id="t">Html <em>heading</em></h2>\n'
        "a <placeholder> stays, and 3 < 4 > 2 too\n"
    )
    front, cleaned = clean_markdown(raw)
    assert front == {}
    for gone in ("page.note", "secret", "hidden", "color", "comment", "&nbsp;", "{", "}"):
        assert gone not in cleaned, gone
    assert "Intro text" in cleaned
    assert "First para" in cleaned
    assert "Second <para>" in cleaned  # entities are unescaped after tag removal
    assert "line one\nline two\nline three" in cleaned
    assert "inline kept \u00a9 2024" in cleaned
    assert "## Html heading" in cleaned
    assert "a <placeholder> stays, and 3 < 4 > 2 too" in cleaned
    assert "\r" not in cleaned
    assert "\n\n\n" not in cleaned
    assert all(line == line.rstrip() for line in cleaned.split("\n"))
    # block tags became paragraph breaks
    assert re.search(r"First para\n+Second", cleaned)


def test_clean_markdown_html_list_becomes_markdown_list():
    _, cleaned = clean_markdown("<ul>\n<li>one</li>\n<li>two</li>\n</ul>")
    assert [ln for ln in cleaned.split("\n") if ln] == ["- one", "- two"]


def test_clean_markdown_empty():
    assert clean_markdown("") == ({}, "")
    assert clean_markdown("  \n\r\n\t ") == ({}, "")


# --------------------------------------------------------------------------- sections


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Definitions", "definitions"),
        ("Glossary of key terms", "definitions"),
        ("Key terms", "definitions"),
        ("Terms used in this policy", "definitions"),
        ("What words mean", "other"),
        ("Meaning of words", "definitions"),
        ("Scope", "scope"),
        ("Who this applies to", "scope"),
        ("Applicability", "scope"),
        ("Eligibility and coverage", "scope"),
        ("Exceptions", "exceptions"),
        ("Exemptions and waivers", "exceptions"),
        ("Requesting a deviation", "exceptions"),
        ("Effective date", "effective_dates"),
        ("Effective date and revision history", "effective_dates"),
        ("Version history", "effective_dates"),
        ("Review date", "effective_dates"),
        ("Key dates", "effective_dates"),
        ("Updates to this policy", "other"),  # "dates" must match a whole word
        ("Carry-over rules", "other"),
        ("", "other"),
        # last heading most significant, earlier headings as fallback
        ("Definitions > Scope", "scope"),
        ("Exceptions > Canada", "exceptions"),
        ("SCOPE > Sick leave > Notes", "scope"),
    ],
)
def test_classify_section(path, expected):
    assert classify_section(path) == expected
    assert expected in SECTION_TYPES


POLICY = """\
---
title: Leave Policy
---
Preamble before any heading, long enough to stand alone as its own normal paragraph \
of text with several more words in it so that it is definitely not short at all \
because it has more than forty words in total, counting every single one of them here.

# Leave Policy

Intro under the title heading.

## Leave types

### Sick leave

Sick leave text.

```text
# not a heading
## also not
```

### Annual leave

Annual leave text.

## Definitions

- **PTO:** paid time off.
- **Leave year:** the calendar year.

## Exceptions

Exceptions text.
"""


def test_sections_paths_and_types():
    chunks = chunk_document("Leave Policy", POLICY)
    by_section = {c.section: c for c in chunks}
    assert list(by_section) == [
        "",
        "Leave types > Sick leave",
        "Leave types > Annual leave",
        "Definitions",
        "Exceptions",
    ]
    assert by_section["Definitions"].section_type == "definitions"
    assert by_section["Exceptions"].section_type == "exceptions"
    assert by_section["Leave types > Sick leave"].section_type == "other"
    sick = [c for c in chunks if c.section == "Leave types > Sick leave"]
    assert len(sick) == 1
    assert "# not a heading" in sick[0].text
    assert sick[0].text.startswith("Leave Policy\nLeave types > Sick leave\n\n")
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    # the H1 is the title: the text under it belongs to section ""
    intro = [c for c in chunks if "Intro under the title heading." in c.text]
    assert intro and intro[0].section == ""
    assert intro[0].text == "Leave Policy\n\nIntro under the title heading."


def test_h1_kept_when_several_and_not_title():
    md = "# Leave Policy\n\nA.\n\n# Part one\n\n## Sub\n\nB.\n\n# Part two\n\nC."
    chunks = chunk_document("Leave Policy", md)
    assert [(c.section, body_of(c)) for c in chunks] == [
        ("", "A."),
        ("Part one > Sub", "B."),
        ("Part two", "C."),
    ]


def test_single_h1_dropped_even_if_not_title():
    chunks = chunk_document("Doc", "# Something else\n\n## Scope\n\nText.")
    assert [c.section for c in chunks] == ["Scope"]
    assert chunks[0].section_type == "scope"


def test_heading_levels_pop_correctly_and_inline_markup_is_cleaned():
    md = (
        "## A\n\n### B\n\n#### C\n\nc text\n\n## **D** [link](http://x) {#anchor}\n\n"
        "d text\n\n### E ###\n\ne text\n\n#NotAHeading\n\n    # indented code"
    )
    chunks = chunk_document("T", md)
    assert [c.section for c in chunks] == ["A > B > C", "D link", "D link > E", "D link > E"]
    assert "#NotAHeading" in chunks[-1].text
    assert "# indented code" in chunks[-1].text


def test_text_format_hash_and_word_count():
    chunks = chunk_document("  My   Title ", "## Scope\n\nSome   words\nwrapped   here.")
    (c,) = chunks
    assert c.text == "My Title\nScope\n\nSome words wrapped here."
    assert c.chunk_hash == hashlib.sha256(c.text.encode("utf-8")).hexdigest()
    assert c.word_count == 4
    assert (c.section_chunk_index, c.section_chunk_count, c.is_split_paragraph) == (0, 1, False)


def test_empty_and_heading_only_documents():
    assert chunk_document("T", "") == []
    assert chunk_document("T", " \n\t\n ") == []
    assert chunk_document("T", "# T\n\n## Empty\n\n### Also empty\n") == []
    assert chunk_document("T", "---\ntitle: x\n---\n") == []


# --------------------------------------------------------------------------- boundaries


def test_normal_paragraphs_end_chunks_and_short_ones_attach_forward():
    p1, p2 = sentence_paragraph(50, stem="a"), sentence_paragraph(60, stem="b")
    lead = "The allowances are:"  # short lead-in
    p3 = sentence_paragraph(45, stem="c")
    md = f"## S\n\n{p1}\n\n{p2}\n\n{lead}\n\n{p3}"
    chunks = chunk_document("T", md)
    assert [body_of(c) for c in chunks] == [p1, p2, f"{lead}\n\n{p3}"]
    assert [(c.section_chunk_index, c.section_chunk_count) for c in chunks] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert [c.word_count for c in chunks] == [50, 60, 48]


def test_short_paragraphs_never_form_runs_longer_than_two():
    # s1 cannot join s2 (a short that itself wants to join the next one); s2 joins p.
    s1, s2 = "Short one here.", "Short two here."
    p = sentence_paragraph(45)
    chunks = chunk_document("T", f"{s1}\n\n{s2}\n\n{p}")
    assert [body_of(c) for c in chunks] == [s1, f"{s2}\n\n{p}"]
    # a short may join a short that ends its section
    chunks = chunk_document("T", f"{s1}\n\n{s2}\n\n## Next\n\n{p}")
    assert [body_of(c) for c in chunks] == [f"{s1}\n\n{s2}", p]


def test_short_does_not_join_when_pair_would_exceed_max_words():
    lead = "Lead in words."
    p = sentence_paragraph(149)
    chunks = chunk_document("T", f"{lead}\n\n{p}")
    assert [body_of(c) for c in chunks] == [lead, p]


def test_chunks_never_cross_sections():
    chunks = chunk_document("T", "## A\n\nShort a.\n\n## B\n\nShort b.")
    assert [(c.section, body_of(c)) for c in chunks] == [("A", "Short a."), ("B", "Short b.")]


def test_list_and_table_runs_are_single_blocks():
    md = (
        "## S\n\nIntro line:\n- item one\n- item two\n\n"
        "- loose item three\n\n  continuation of three\n\n- item four\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"
    )
    chunks = chunk_document("T", md, min_words=3)
    bodies = [body_of(c) for c in chunks]
    assert bodies == [
        "Intro line:\n- item one\n- item two\n- loose item three\n  continuation of three\n"
        "- item four",
        "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |",
    ]


def test_table_keeps_its_rows_even_after_a_lead_in_line():
    md = "Allowances:\n| Country | Days |\n|---|---|\n| Canada | 20 |"
    (chunk,) = chunk_document("T", md)
    assert body_of(chunk) == md
    # a bare pipe table without a leading pipe is recognised by its delimiter row
    md = "Country | Days\n--- | ---\nCanada | 20"
    assert body_of(chunk_document("T", md)[0]) == md


def test_long_paragraph_is_split_on_sentences():
    para = sentence_paragraph(400, per_sentence=20)
    chunks = chunk_document("T", f"## S\n\n{para}\n\nAfter.")
    split = [c for c in chunks if c.is_split_paragraph]
    assert len(split) >= 3
    assert all(c.word_count <= 150 for c in split)
    assert all(body_of(c).endswith(".") for c in split)  # cut on sentence ends
    assert " ".join(body_of(c) for c in split) == para
    # pieces are balanced rather than "full, full, tiny"
    assert min(c.word_count for c in split) >= 100
    assert not chunks[-1].is_split_paragraph
    assert body_of(chunks[-1]) == "After."
    assert [c.section_chunk_count for c in chunks] == [len(chunks)] * len(chunks)


def test_single_over_long_sentence_is_cut_on_words():
    para = words(320)  # no sentence boundary at all
    chunks = chunk_document("T", para, max_words=100)
    assert len(chunks) == 4
    assert all(c.is_split_paragraph and c.word_count <= 100 for c in chunks)
    assert " ".join(body_of(c) for c in chunks) == para


def test_long_list_is_split_between_items():
    items = [f"- item {i} " + words(20, f"x{i}_") for i in range(12)]
    chunks = chunk_document("T", "\n".join(items), max_words=100)
    assert len(chunks) >= 3
    assert all(c.is_split_paragraph and c.word_count <= 100 for c in chunks)
    assert all(body_of(c).startswith("- item") for c in chunks)
    assert "\n".join(body_of(c) for c in chunks) == "\n".join(items)


def test_hashes_are_deterministic():
    a = chunk_document("Leave Policy", POLICY)
    b = chunk_document("Leave Policy", POLICY)
    assert a == b
    assert len({c.chunk_hash for c in a}) == len(a)


def test_golden_output_is_pinned_to_chunker_version():
    """Chunk text is part of the lineage contract: changing it requires a new version."""
    digest = hashlib.sha256(
        "\n".join(c.chunk_hash for c in chunk_document("Leave Policy", POLICY)).encode()
    ).hexdigest()
    assert (CHUNKER_VERSION, digest) == (
        "md-sections-v1",
        "c7ad964a6f377684febc7db09209a780807e2724c8496196f3599eba15959bfc",
    ), "chunker output changed: bump CHUNKER_VERSION and update this digest"


@pytest.mark.parametrize(("max_words", "min_words"), [(0, 0), (10, 11), (10, -1)])
def test_bad_parameters_are_rejected(max_words, min_words):
    with pytest.raises(ValueError, match="max_words|min_words"):
        chunk_document("T", "text", max_words=max_words, min_words=min_words)


@pytest.mark.skipif(not SAMPLE_DOCS.is_dir(), reason="sample documents not present")
def test_sample_documents_chunk_cleanly():
    for path in sorted(SAMPLE_DOCS.glob("*.md")):
        front, cleaned = clean_markdown(path.read_text(encoding="utf-8"))
        title = front.get("title", path.stem)
        chunks = chunk_document(title, path.read_text(encoding="utf-8"))
        assert chunks, path.name
        assert all(c.word_count <= 150 for c in chunks), path.name
        assert all(c.section_type in SECTION_TYPES for c in chunks)
        assert all(c.text.startswith(title + "\n") for c in chunks)
        got = " ".join(body_of(c) for c in chunks).split()
        assert got == _body_words(cleaned), path.name


# --------------------------------------------------------------------------- properties

_VOCAB_TEXT = (
    "leave pto employee manager holiday accrual carry over days balance policy request "
    "approval notice sick family jury duty bereavement public company country year"
)
VOCAB = tuple(_VOCAB_TEXT.split())
WORD = st.sampled_from(VOCAB)
PARAMS = st.sampled_from([(150, 40), (30, 10), (12, 4)])


def render_paragraph(tokens: list[str], sentence_len: int) -> str:
    out = []
    for start in range(0, len(tokens), sentence_len):
        sent = list(tokens[start : start + sentence_len])
        sent[0] = sent[0].capitalize()
        out.append(" ".join(sent) + ".")
    return " ".join(out)


@st.composite
def paragraphs(draw, max_size: int) -> str:
    tokens = draw(st.lists(WORD, min_size=1, max_size=max_size))
    return render_paragraph(tokens, draw(st.integers(3, 25)))


@st.composite
def documents(draw, max_words: int):
    """(preamble paragraphs, [(heading markdown, [paragraphs])])."""
    para = paragraphs(max_size=max_words * 3)
    preamble = draw(st.lists(para, max_size=3))
    sections = draw(
        st.lists(
            st.tuples(
                st.tuples(st.sampled_from(["##", "###"]), st.lists(WORD, min_size=1, max_size=3)),
                st.lists(para, max_size=8),
            ),
            max_size=4,
        )
    )
    return preamble, [(f"{h} {' '.join(ws)}", paras) for (h, ws), paras in sections]


def render(doc) -> str:
    preamble, sections = doc
    parts = ["# Title", *preamble]
    for heading, paras in sections:
        parts.append(heading)
        parts.extend(paras)
    return "\n\n".join(parts) + "\n"


def n_words(text: str) -> int:
    return len(text.split())


def _body_words(cleaned: str) -> list[str]:
    """Words of a cleaned document outside headings (code fences aware, like the chunker)."""
    out: list[str] = []
    fence = None
    for line in cleaned.split("\n"):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)):
            fence = None
        elif fence is None and (
            re.match(r"^ {0,3}#{1,6}(\s|$)", line) or re.match(r"^ {0,3}([-*_])( *\1){2,} *$", line)
        ):
            continue
        out.extend(line.split())
    return out


def hash_multiset(title: str, doc, max_words: int, min_words: int) -> Counter:
    chunks = chunk_document(title, render(doc), max_words=max_words, min_words=min_words)
    return Counter(c.chunk_hash for c in chunks)


def replace_paragraph(doc, where: tuple[int, int], new: str):
    preamble, sections = doc
    s, p = where
    if s < 0:
        preamble = [*preamble[:p], new, *preamble[p + 1 :]]
    else:
        heading, paras = sections[s]
        sections = [
            *sections[:s],
            (heading, [*paras[:p], new, *paras[p + 1 :]]),
            *sections[s + 1 :],
        ]
    return preamble, sections


def positions(doc):
    preamble, sections = doc
    out = [((-1, i), p) for i, p in enumerate(preamble)]
    for s, (_, paras) in enumerate(sections):
        out.extend(((s, i), p) for i, p in enumerate(paras))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), params=PARAMS)
def test_editing_one_paragraph_changes_at_most_two_chunks(data, params):
    max_words, min_words = params
    doc = data.draw(documents(max_words))
    # edit a paragraph that fits in one chunk, keeping it so (a paragraph that grows
    # past max_words must be cut into several pieces, which is not a local edit)
    editable = [(w, p) for w, p in positions(doc) if n_words(p) <= max_words]
    if not editable:
        return
    where, old = data.draw(st.sampled_from(editable))
    toks = old.rstrip(".").replace(".", "").lower().split()
    kind = data.draw(st.sampled_from(["replace", "change_word", "grow", "shrink"]))
    if kind == "replace":
        toks = data.draw(st.lists(WORD, min_size=1, max_size=max_words))
    elif kind == "change_word":
        i = data.draw(st.integers(0, len(toks) - 1))
        toks[i] = data.draw(WORD.filter(lambda w: w != toks[i]))
    elif kind == "grow":
        extra = data.draw(st.lists(WORD, min_size=1, max_size=max_words))
        at = data.draw(st.integers(0, len(toks)))
        toks = (toks[:at] + extra + toks[at:])[:max_words]
    else:
        keep = data.draw(st.integers(1, len(toks)))
        toks = toks[:keep]
    new = render_paragraph(toks, data.draw(st.integers(3, 25)))
    edited = replace_paragraph(doc, where, new)

    before = hash_multiset("Title", doc, max_words, min_words)
    after = hash_multiset("Title", edited, max_words, min_words)
    removed, added = before - after, after - before
    assert sum(removed.values()) <= 2, (removed, added)
    assert sum(added.values()) <= 2, (removed, added)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), params=PARAMS)
def test_inserting_or_deleting_a_paragraph_changes_at_most_three_chunks(data, params):
    max_words, min_words = params
    doc = data.draw(documents(max_words))
    preamble, sections = doc
    slots = [(-1, i) for i in range(len(preamble) + 1)] + [
        (s, i) for s, (_, paras) in enumerate(sections) for i in range(len(paras) + 1)
    ]
    s, i = data.draw(st.sampled_from(slots))
    new = data.draw(paragraphs(max_size=max_words))
    if s < 0:
        edited = ([*preamble[:i], new, *preamble[i:]], sections)
    else:
        heading, paras = sections[s]
        edited = (
            preamble,
            [*sections[:s], (heading, [*paras[:i], new, *paras[i:]]), *sections[s + 1 :]],
        )
    before = hash_multiset("Title", doc, max_words, min_words)
    after = hash_multiset("Title", edited, max_words, min_words)
    # insertion (after - before) and, read backwards, deletion (before - after)
    assert sum((after - before).values()) <= 3
    assert sum((before - after).values()) <= 2


@settings(max_examples=150, deadline=None)
@given(doc=documents(150), params=PARAMS)
def test_no_text_lost_and_chunks_respect_max_words(doc, params):
    max_words, min_words = params
    md = render(doc)
    chunks = chunk_document("Title", md, max_words=max_words, min_words=min_words)
    for c in chunks:
        assert c.word_count <= max_words
        assert n_words(body_of(c)) == c.word_count
        assert c.chunk_hash == hashlib.sha256(c.text.encode()).hexdigest()
        prefix = "Title\n" + (c.section + "\n" if c.section else "") + "\n"
        assert c.text.startswith(prefix)
    got = " ".join(body_of(c) for c in chunks).split()
    assert got == _body_words(clean_markdown(md)[1])
    # per-section bookkeeping is consistent
    groups: dict[int, list[Chunk]] = {}
    start = 0
    for i, c in enumerate(chunks):
        if c.section_chunk_index == 0:
            start = i
        groups.setdefault(start, []).append(c)
    for members in groups.values():
        assert [m.section_chunk_index for m in members] == list(range(len(members)))
        assert {m.section_chunk_count for m in members} == {len(members)}
        assert len({m.section for m in members}) == 1


MARKDOWNISH = st.text(
    alphabet=st.sampled_from(list("ab #*-|`~<>/{}%!&;:.\n\t\r=_[]()0123456789")), max_size=400
)


@settings(max_examples=300, deadline=None)
@given(content=MARKDOWNISH | st.text(max_size=300), params=PARAMS)
def test_never_raises_on_odd_markdown(content, params):
    max_words, min_words = params
    chunks = chunk_document("T", content, max_words=max_words, min_words=min_words)
    for c in chunks:
        assert 0 < c.word_count <= max_words
        assert c.section_type in SECTION_TYPES
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
