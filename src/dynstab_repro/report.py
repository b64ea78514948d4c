"""Markdown and self-contained HTML reports of a reproduction, and the cross-experiment summary.

A report holds: title, the paper reference, the verdict (claims per status, failed units),
the provenance (command line, git commit and dirty flag, versions, threads, device, start
time, config hash), the claims table (``id | claim | source | paper | ours | rule | status``),
the unit outcomes (diverged, early-stopped, ... counted as categories of their own), the
documented defaults, the resolved config, extra tables, figures (linked relatively in
Markdown, embedded as base64 PNG in HTML, so ``report.html`` is self-contained), this
experiment's wall time, failed units with tracebacks and the environment.

Claim statuses are printed as they are: ``reproduced``, ``adapted``, ``not reproduced``,
``failed``; an adapted or not-reproduced claim is never shown as a pass.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynstab_repro.base import Claim, ClaimStatus, outcome_counts, status_counts, verdict
from dynstab_repro.io import atomic_write_text

__all__ = [
    "ReportData",
    "provenance_rows",
    "render_html",
    "render_markdown",
    "render_summary_markdown",
    "write_report",
]


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows (built by the runner from the files of a run directory).

    Attributes:
        name: Experiment registry name.
        title: One-line title.
        description: Paragraph describing the experiment.
        reference: The paper and place reproduced (``"Wu & Su (ICML 2023), Fig. 2"``).
        profile: Profile the config was built from.
        overrides: Overrides applied on top of the profile.
        config: Resolved config (JSON-able dict).
        ambiguities: Documented defaults for what the paper leaves open.
        claims: Checked claims.
        tables: Extra ``(title, rows)`` tables.
        figures: PNG paths relative to the run directory.
        runtime_s: Wall-clock seconds of this experiment in the invocation that produced the
            results (its units' span plus analysis, figures and report).
        compute_s: Sum of the units' runtimes (all invocations).
        n_units: Number of units.
        n_computed: Units computed by the producing invocation.
        n_reused: Units reused from an earlier invocation.
        failures: ``{key: {"error": ..., "traceback": ...}}`` of failed units.
        notes: Extra remarks (recomputed or quarantined units, errors of ``analyze``/``plot``).
        env: Environment information (:func:`dynstab_repro.io.environment_info`).
        outcomes: ``{key: category}`` of every unit (:func:`dynstab_repro.base.unit_outcome`).
        provenance: Command line, commit, versions, threads, device and start time.
        config_hash: Hash of the experiment name and resolved config.
    """

    name: str
    title: str
    description: str = ""
    reference: str = ""
    profile: str = ""
    overrides: Any = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    ambiguities: Mapping[str, str] = field(default_factory=dict)
    claims: Sequence[Claim] = ()
    tables: Sequence[tuple[str, list[dict[str, Any]]]] = ()
    figures: Sequence[str] = ()
    runtime_s: float | None = None
    compute_s: float | None = None
    n_units: int = 0
    n_computed: int = 0
    n_reused: int = 0
    failures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notes: Sequence[str] = ()
    env: Mapping[str, Any] = field(default_factory=dict)
    outcomes: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str = ""

    @property
    def passed(self) -> bool:
        """At least one claim, no claim failed, and no unit failed."""
        return bool(self.claims) and all(c.passed for c in self.claims) and not self.failures


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if v is None:
        return "n/a"
    return str(v)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", "<br>")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _dict_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    return header, [[r.get(k, "") for k in header] for r in rows]


def _count_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no claims"


def _status_line(data: ReportData) -> str:
    counts = _count_text(status_counts(data.claims))
    line = f"**{verdict(data.claims, bool(data.failures))}**: {len(data.claims)} claims ({counts})"
    if data.failures:
        line += f"; {len(data.failures)} of {data.n_units} units failed"
    return line + "."


def _units_line(data: ReportData) -> str:
    text = f"{data.n_units} units ({data.n_computed} computed now, {data.n_reused} reused)"
    if data.outcomes:
        text += ": " + ", ".join(f"{n} {k}" for k, n in outcome_counts(data.outcomes).items())
    return text + "."


def _runtime_line(data: ReportData) -> str:
    parts = []
    if data.runtime_s is not None:
        parts.append(f"wall time of this experiment {data.runtime_s:.1f} s")
    if data.compute_s is not None:
        parts.append(f"sum of unit runtimes {data.compute_s:.1f} s (all invocations)")
    return ("; ".join(parts) or "not recorded") + "."


def _wall_text(data: ReportData) -> str:
    wall = "n/a" if data.runtime_s is None else f"{data.runtime_s:.1f} s"
    if data.compute_s is not None:
        wall += f" (sum of unit runtimes over all invocations {data.compute_s:.1f} s)"
    return wall


def provenance_rows(prov: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, value)`` rows of a provenance record, for the report and the summary.

    Example:
        >>> provenance_rows({"command": "dynstab run x", "commit_label": "abc1234 dirty"})[:2]
        [('command', '`dynstab run x`'), ('git commit', 'abc1234 dirty')]
    """
    if not prov:
        return []
    versions = prov.get("versions") or {}
    threads = prov.get("threads") or {}
    thread_text = f"{threads.get('main', 'n/a')} in the main process"
    if threads.get("executor"):
        thread_text += f"; executor {threads['executor']}"
    if threads.get("workers"):
        thread_text += f", {threads['workers']} workers"
    if threads.get("per_worker"):
        thread_text += f" × {threads['per_worker']} thread(s)"
    rows = [
        ("command", f"`{prov.get('command', 'n/a')}`"),
        ("git commit", str(prov.get("commit_label", "n/a"))),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) or "n/a",
        ),
        ("threads", thread_text if threads else "n/a"),
        ("device", str(prov.get("device", "n/a"))),
        ("started", str(prov.get("started_at", "n/a"))),
    ]
    if prov.get("wall_s") is not None:
        rows.append(("wall time (whole invocation)", f"{float(prov['wall_s']):.1f} s"))
    return rows


def _claim_rows(claims: Sequence[Claim]) -> list[list[Any]]:
    rows = []
    for c in claims:
        status = ClaimStatus(str(c.status)).value
        if c.note:
            status += f" ({c.note})"
        rows.append([c.id, c.statement, c.source, c.paper, c.measured, c.criterion, status])
    return rows


_CLAIM_HEADER = ["id", "claim", "source", "paper", "ours", "rule", "status"]


def render_markdown(data: ReportData) -> str:
    """The report as Markdown (figures linked relative to the run directory)."""
    out = [f"# {data.title or data.name}", ""]
    out.append(
        f"Experiment `{data.name}`; paper: {data.reference or 'n/a'}; profile: "
        f"`{data.profile}`; overrides: `{_fmt(list(data.overrides))}`; config hash "
        f"`{data.config_hash or 'n/a'}`."
    )
    out += ["", _status_line(data), ""]
    if data.provenance:
        out += ["| provenance | |", "|---|---|"]
        out += [f"| {k} | {_md_cell(v)} |" for k, v in provenance_rows(data.provenance)]
        out.append(f"| wall time (this experiment) | {_md_cell(_wall_text(data))} |")
        out.append("")
    if data.description:
        out += [data.description, ""]
    out += ["## Claims", ""]
    if data.claims:
        out.append(_md_table(_CLAIM_HEADER, _claim_rows(data.claims)))
    else:
        out.append("No claims were checked.")
    out += ["", "## Units", "", _units_line(data), ""]
    special = {k: v for k, v in data.outcomes.items() if v not in ("ok", "converged")}
    if special:
        out.append(_md_table(["unit", "outcome"], list(special.items())))
        out.append("")
    if data.ambiguities:
        out += ["## Documented defaults", ""]
        out.append(_md_table(["id", "default used"], list(data.ambiguities.items())))
        out.append("")
    for title, rows in data.tables:
        out += [f"## {title}", ""]
        out.append(_md_table(*_dict_rows(rows)) if rows else "(empty)")
        out.append("")
    if data.figures:
        out += ["## Figures", ""]
        out += [f"![{Path(f).stem}]({f})" for f in data.figures]
        out.append("")
    out += ["## Configuration", ""]
    out.append(_md_table(["key", "value"], list(data.config.items())))
    out += ["", "## Runtime", "", _runtime_line(data), ""]
    if data.failures:
        out += ["## Failed units", ""]
        for key, info in data.failures.items():
            out += [f"### `{key}`", "", f"{info.get('error', '')}", "", "```text"]
            out += [str(info.get("traceback", "")).rstrip()[-4000:], "```", ""]
    if data.notes:
        out += ["## Notes", ""] + [f"* {n}" for n in data.notes] + [""]
    if data.env:
        out += ["## Environment", ""]
        out.append(_md_table(["item", "value"], list(data.env.items())))
        out.append("")
    return "\n".join(out)


def _h(v: Any) -> str:
    return html.escape(_fmt(v))


def _css_class(status: str) -> str:
    return status.split(" (")[0].replace(" ", "-").lower()


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], status_col: int = -1) -> str:
    parts = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = f' class="{_css_class(str(c))}"' if i == status_col else ""
            cells.append(f"<td{cls}>{_h(c)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


_CSS = """
body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}
td,th{border:1px solid #bbb;padding:0.25rem 0.5rem;vertical-align:top;text-align:left}
th{background:#eee}
.reproduced{background:#d8f5d8;font-weight:bold}.adapted{background:#fdf1c7;font-weight:bold}
.not-reproduced{background:#e6e6f0;font-weight:bold}.failed{background:#f8d0d0;font-weight:bold}
.partly-reproduced{background:#e6e6f0;font-weight:bold}
.reproduced-with-adaptations{background:#fdf1c7;font-weight:bold}
img{max-width:100%;border:1px solid #ddd;margin:0.5rem 0}
pre{background:#f6f6f6;padding:0.5rem;overflow:auto}
"""


def render_html(data: ReportData, run_dir: Path | None = None) -> str:
    """The report as a self-contained HTML page (PNG figures embedded as base64 when found)."""
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(data.title or data.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.title or data.name)}</h1>",
        f"<p>Experiment <code>{html.escape(data.name)}</code>; paper: "
        f"{html.escape(data.reference or 'n/a')}; profile: <code>{html.escape(data.profile)}"
        f"</code>; overrides: <code>{_h(list(data.overrides))}</code>; config hash "
        f"<code>{html.escape(data.config_hash or 'n/a')}</code>.</p>",
        f'<p class="{_css_class(verdict(data.claims, bool(data.failures)))}">'
        + html.escape(_status_line(data).replace("**", ""))
        + "</p>",
    ]
    if data.provenance:
        rows = [[k, v.strip("`")] for k, v in provenance_rows(data.provenance)]
        rows.append(["wall time (this experiment)", _wall_text(data)])
        out.append(_html_table(["provenance", ""], rows))
    if data.description:
        out.append(f"<p>{html.escape(data.description)}</p>")
    out.append("<h2>Claims</h2>")
    if data.claims:
        out.append(_html_table(_CLAIM_HEADER, _claim_rows(data.claims), 6))
    else:
        out.append("<p>No claims were checked.</p>")
    out += ["<h2>Units</h2>", f"<p>{html.escape(_units_line(data))}</p>"]
    special = {k: v for k, v in data.outcomes.items() if v not in ("ok", "converged")}
    if special:
        out.append(_html_table(["unit", "outcome"], list(special.items())))
    if data.ambiguities:
        out.append("<h2>Documented defaults</h2>")
        out.append(_html_table(["id", "default used"], list(data.ambiguities.items())))
    for title, rows_ in data.tables:
        out.append(f"<h2>{html.escape(title)}</h2>")
        out.append(_html_table(*_dict_rows(rows_)) if rows_ else "<p>(empty)</p>")
    if data.figures:
        out.append("<h2>Figures</h2>")
        for f in data.figures:
            path = (run_dir / f) if run_dir is not None else Path(f)
            if path.is_file():
                b64 = base64.b64encode(path.read_bytes()).decode("ascii")
                src = f"data:image/png;base64,{b64}"
            else:
                src = html.escape(str(f))
            out.append(
                f'<figure><img src="{src}" alt="{html.escape(Path(f).stem)}">'
                f"<figcaption>{html.escape(Path(f).stem)}</figcaption></figure>"
            )
    out.append("<h2>Configuration</h2>")
    out.append(_html_table(["key", "value"], list(data.config.items())))
    out += ["<h2>Runtime</h2>", f"<p>{html.escape(_runtime_line(data))}</p>"]
    if data.failures:
        out.append("<h2>Failed units</h2>")
        for key, info in data.failures.items():
            out.append(
                f"<h3><code>{html.escape(key)}</code></h3>"
                f"<p>{html.escape(str(info.get('error', '')))}</p>"
                f"<pre>{html.escape(str(info.get('traceback', ''))[-4000:])}</pre>"
            )
    if data.notes:
        out.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
            + "</ul>"
        )
    if data.env:
        out.append("<h2>Environment</h2>")
        out.append(_html_table(["item", "value"], list(data.env.items())))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: Path, data: ReportData) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir`` atomically; return both paths."""
    md = atomic_write_text(run_dir / "report.md", render_markdown(data))
    page = atomic_write_text(run_dir / "report.html", render_html(data, run_dir))
    return md, page


def render_summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: provenance, one row per experiment, then every claim.

    Args:
        summary: The content of ``summary.json``: ``name``, ``provenance`` and
            ``experiments``, a list of dicts with ``name``, ``reference``, ``dir``,
            ``verdict``, ``status_counts``, ``claims`` (claim dicts), ``failed_units``,
            ``outcome_counts``, ``wall_s`` and ``config_hash``.

    Returns:
        Markdown whose claims table has the columns ``experiment | id | claim | source |
        paper | ours | rule | status``.
    """
    rows = list(summary.get("experiments", []))
    out = [f"# Reproduction summary: {summary.get('name', '')}", ""]
    prov = summary.get("provenance") or {}
    if prov:
        out += ["| provenance | |", "|---|---|"]
        out += [f"| {k} | {_md_cell(v)} |" for k, v in provenance_rows(prov)]
        out.append("")
    n_failed = sum(r.get("verdict") == "FAILED" for r in rows)
    totals = {s.value: 0 for s in ClaimStatus}
    for r in rows:
        for k, n in (r.get("status_counts") or {}).items():
            totals[k] = totals.get(k, 0) + int(n)
    out.append(
        f"{len(rows) - n_failed}/{len(rows)} experiments without a failure; claims: "
        f"{_count_text(totals)}."
    )
    out.append("")
    out.append(
        _md_table(
            [
                "experiment",
                "paper",
                "verdict",
                "claims",
                "units",
                "wall s",
                "config hash",
                "report",
            ],
            [
                [
                    r["name"],
                    r.get("reference") or "",
                    r.get("verdict", ""),
                    _count_text(r.get("status_counts") or {}),
                    ", ".join(f"{n} {k}" for k, n in (r.get("outcome_counts") or {}).items()),
                    f"{float(r.get('wall_s') or 0.0):.1f}",
                    f"`{r.get('config_hash', '')}`",
                    f"[report]({r['dir']}/report.md)",
                ]
                for r in rows
            ],
        )
    )
    out += ["", "## All claims", ""]
    claim_rows = []
    for r in rows:
        for c in r["claims"]:
            status = str(c.get("status") or ("reproduced" if c.get("passed") else "failed"))
            if c.get("note"):
                status += f" ({c['note']})"
            claim_rows.append(
                [
                    r["name"],
                    c["id"],
                    c["statement"],
                    c.get("source", ""),
                    c.get("paper", ""),
                    c.get("measured", ""),
                    c.get("criterion", ""),
                    status,
                ]
            )
    out.append(
        _md_table(
            ["experiment", "id", "claim", "source", "paper", "ours", "rule", "status"], claim_rows
        )
    )
    return "\n".join(out) + "\n"
