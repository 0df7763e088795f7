"""The evaluation report of `ragmart eval`: Markdown tables and a PNG comparing versions.

One report per run, named after what it evaluated: ``eval_v2.md`` for one version,
``eval_v1_vs_v2.md`` for a comparison (baseline first), each with its plot beside it
(``eval_v1_vs_v2.png``: grouped bars per metric, one group per document type, one bar per
version).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ragmart.quality.gate import GateResult
from ragmart.quality.metrics import UNKNOWN_TYPE, EvalReport, Metrics

METRIC_TITLES = {"recall": "recall@{k}", "mrr": "MRR", "ndcg": "nDCG@10"}


def _label(report: EvalReport, index: int) -> str:
    return report.version or f"run {index + 1}"


def report_stem(reports: Sequence[EvalReport]) -> str:
    """``eval_<version>`` or ``eval_<baseline>_vs_<candidate>``."""
    return "eval_" + "_vs_".join(_label(r, i) for i, r in enumerate(reports))


def _values(metrics: Metrics | None) -> list[float | None]:
    if metrics is None:
        return [None, None, None]
    return [metrics.recall_at_k, metrics.mrr, metrics.ndcg_at_10]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(old: float | None, new: float | None) -> str:
    return "–" if old is None or new is None else f"{new - old:+.4f}"


def _groups(reports: Sequence[EvalReport]) -> list[str]:
    """Document types present in any report, the unknown bucket last."""
    names = sorted({name for r in reports for name in r.by_document_type} - {UNKNOWN_TYPE})
    if any(UNKNOWN_TYPE in r.by_document_type for r in reports):
        names.append(UNKNOWN_TYPE)
    return names


def render_markdown(
    reports: Sequence[EvalReport],
    gate_result: GateResult | None = None,
    *,
    tolerance: dict[str, float] | None = None,
    plot_name: str | None = None,
) -> str:
    """The report as Markdown; with two reports the second is the candidate."""
    if not reports:
        raise ValueError("render_markdown needs at least one EvalReport")
    labels = [_label(r, i) for i, r in enumerate(reports)]
    k = reports[0].k
    names = list(reports[0].metrics())
    compare = len(reports) == 2
    lines = [
        f"# Retrieval evaluation: {' vs '.join(labels)}",
        "",
        f"{reports[0].queries} judged questions; documents ranked by their best chunk (exact "
        f"cosine search, ties by chunk_id, over every served document whatever its "
        f"allowed_groups: the operator view, `--all-groups`, so this report may name "
        f"restricted documents); recall@{k}, MRR and nDCG@10 (binary relevance, "
        "log2 discount).",
        "",
        "| version | embedding model | questions |",
        "|---|---|---|",
        *[f"| {label} | {r.embedding_model or '?'} | {r.queries} |"
          for label, r in zip(labels, reports, strict=True)],
        "",
        "## Overall",
        "",
        "| metric | " + " | ".join(labels) + (f" | Δ ({labels[1]} − {labels[0]}) |"
                                               if compare else " |"),
        "|---" * (len(labels) + 1 + compare) + "|",
    ]
    for name in names:
        values = [r.metrics()[name] for r in reports]
        row = f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |"
        if compare:
            row += f" {_delta(values[0], values[1])} |"
        lines.append(row)
    if plot_name:
        lines += ["", f"![recall@{k}, MRR and nDCG@10 per document type]({plot_name})"]

    if gate_result is not None:
        verdict = "passed" if gate_result.passed else "failed"
        lines += ["", f"## Gate: **{verdict}**", "",
                  f"Baseline {labels[0]}, candidate {labels[-1]}."]
        if tolerance:
            allowed = ", ".join(f"{name} {value:.4f}" for name, value in tolerance.items())
            lines.append(f"Largest allowed drop: {allowed}.")
        lines += [""] + [f"- {failure}" for failure in gate_result.failures]

    groups = _groups(reports)
    lines += [
        "",
        "## Per document type",
        "",
        "A question counts under the type of each of its relevant documents; "
        f"`{UNKNOWN_TYPE}`: none of them is served.",
        "",
        "| document type | questions | "
        + " | ".join(f"{name} {label}" for name in names for label in labels) + " |",
        "|---" * (2 + len(names) * len(labels)) + "|",
    ]
    for group in groups:
        per_version = [r.by_document_type.get(group) for r in reports]
        counts = "/".join(str(m.queries) if m else "0" for m in per_version)
        cells = [_fmt(_values(m)[i]) for i in range(len(names)) for m in per_version]
        lines.append(f"| {group} | {counts} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Questions",
        "",
        "Rank of the first relevant document (– when not ranked) and nDCG@10, per version.",
        "",
        "| question | relevant | "
        + " | ".join(f"first rank {label}" for label in labels) + " | "
        + " | ".join(f"nDCG@10 {label}" for label in labels) + f" | top {k} ({labels[-1]}) |",
        "|---" * (3 + 2 * len(labels)) + "|",
    ]
    by_version = [{q.query_id: q for q in r.per_query} for r in reports]
    for query in reports[-1].per_query:
        results = [versions.get(query.query_id) for versions in by_version]
        ranks = [str(q.first_relevant_rank) if q and q.first_relevant_rank else "–"
                 for q in results]
        ndcgs = [_fmt(q.ndcg if q else None) for q in results]
        lines.append(
            f"| {query.query_id} | {', '.join(query.relevant_document_ids)} | "
            + " | ".join(ranks) + " | " + " | ".join(ndcgs) + " | "
            + ", ".join(query.top_documents) + " |"
        )
    return "\n".join(lines) + "\n"


def plot_reports(reports: Sequence[EvalReport], path: Path) -> Path:
    """Grouped bars: one panel per metric, one group per document type (overall first), one
    bar per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_label(r, i) for i, r in enumerate(reports)]
    groups = ["overall", *_groups(reports)]
    k = reports[0].k
    titles = [METRIC_TITLES["recall"].format(k=k), METRIC_TITLES["mrr"], METRIC_TITLES["ndcg"]]
    width = 0.8 / len(reports)
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 1.3 * len(groups) + 2), 9), sharex=True)
    for index, (axis, title) in enumerate(zip(axes, titles, strict=True)):
        for offset, (label, report) in enumerate(zip(labels, reports, strict=True)):
            heights = []
            for group in groups:
                metrics = (report.overall if group == "overall"
                           else report.by_document_type.get(group))
                heights.append(_values(metrics)[index] or 0.0)
            xs = [g + (offset - (len(reports) - 1) / 2) * width for g in range(len(groups))]
            bars = axis.bar(xs, heights, width, label=label)
            axis.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        axis.set_ylim(0, 1.1)
        axis.set_ylabel(title)
        axis.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(labels), fontsize=8,
                   frameon=False)
    axes[0].set_title(f"Retrieval evaluation: {' vs '.join(labels)}", loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def write_report(
    reports: Sequence[EvalReport],
    out_dir: str | Path,
    gate_result: GateResult | None = None,
    *,
    tolerance: dict[str, float] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.md`` and ``<stem>.png``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(reports)
    plot = plot_reports(reports, out / f"{stem}.png")
    markdown = out / f"{stem}.md"
    markdown.write_text(
        render_markdown(reports, gate_result, tolerance=tolerance, plot_name=plot.name),
        encoding="utf-8",
    )
    return markdown, plot
