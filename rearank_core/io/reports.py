"""The evaluate-model report (``<suite.metrics>/<suite>/<label>.json``) as a markdown table: the summary written
beside the JSON and the trained adapter's card both show it. A dataset the suite could not evaluate is a row that
says so, its reason listed below the table."""

from __future__ import annotations

from typing import Any

NOT_EVALUATED = "not evaluated"


def first_stage(row: dict[str, Any]) -> str:
    """A report row's first stage; reports written before suites had other first stages than BM25 name none."""
    return row.get("first_stage", "bm25")


def _rate(value: float | None) -> str:
    return "not computed" if value is None else f"{value:.1%}"


def report_table(report: dict[str, Any], model: str = "this model") -> list[str]:
    """Markdown lines: one row per dataset with its first stage's nDCG@10 and ``model``'s on the same queries."""
    header = f"| dataset | first stage | queries | top-k | first stage nDCG@10 | {model} nDCG@10 | format-valid | exact format |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    reasons = []
    for name, row in report["datasets"].items():
        stage = first_stage(row)
        if row.get("status") == NOT_EVALUATED:
            lines.append(f"| {name} | {stage} | | | {NOT_EVALUATED} | {NOT_EVALUATED} | | |")
            reasons.append(f"- {name}: {NOT_EVALUATED}: {row['reason']}")
            continue
        lines.append(f"| {name} | {stage} | {row['queries']} | {row['top_k']} | {row[stage]['ndcg@10']:.4f} | "
                     f"{row['reranked']['ndcg@10']:.4f} | {_rate(row['format_valid_rate'])} | "
                     f"{_rate(row.get('exact_rate'))} |")
    return lines + ["", *reasons] if reasons else lines


def report_markdown(report: dict[str, Any]) -> str:
    """The whole summary: a heading naming the model, the suite and its label, then the table."""
    return "\n".join([f"# {report['label']} on suite `{report['suite']}`", "", f"Model: `{report['model']}`", "",
                      *report_table(report, report["label"])]) + "\n"


def comparison_table(reports: dict[str, dict[str, Any]], speeds: dict[str, dict[str, float | None]]) -> list[str]:
    """Markdown lines: one row per dataset, its first stage's nDCG@10, then each labelled model's nDCG@10,
    format-valid rate (reasoning; first mode parses nothing) and windows/s (``speeds[label][dataset]``; None: not
    recorded, e.g. a run resumed from its traces measured nothing). The reports must be of one suite."""
    labels = list(reports)
    head = ["dataset", "queries", "top-k", "first stage nDCG@10"]
    for label in labels:
        mode = reports[label].get("mode", "reasoning")
        head += [f"{label} ({mode}) nDCG@10", f"{label} format-valid", f"{label} windows/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in reports[labels[0]]["datasets"].items():
        if row.get("status") == NOT_EVALUATED:
            lines.append(f"| {name} | | | {NOT_EVALUATED} |" + f" {NOT_EVALUATED} | | |" * len(labels))
            continue
        stage = first_stage(row)
        cells = [name, str(row["queries"]), str(row["top_k"]), f"{row[stage]['ndcg@10']:.4f}"]
        for label in labels:
            other = reports[label]["datasets"][name]
            speed = speeds.get(label, {}).get(name)
            cells += [f"{other['reranked']['ndcg@10']:.4f}", _rate(other["format_valid_rate"]),
                      "not recorded" if speed is None else f"{speed:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
