"""Markdown and self-contained HTML reports of a reproduction, and the cross-experiment summary.

A report holds: title, spec reference, status (claims passed/failed, failed units), the
claims table (claim | criterion | measured | PASS/FAIL), the ambiguity defaults table
(A1–A14 style), the resolved config, extra tables, figures (linked relatively in Markdown,
embedded as base64 PNG in HTML, so ``report.html`` is self-contained), runtime, failed units
with tracebacks and the environment.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynstab_repro.base import Claim
from dynstab_repro.io import atomic_write_text

__all__ = [
    "ReportData",
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
        spec_reference: Where the recipe is specified.
        profile: Profile the config was built from.
        overrides: Overrides applied on top of the profile.
        config: Resolved config (JSON-able dict).
        ambiguities: Documented defaults of the spec's ambiguities.
        claims: Checked claims.
        tables: Extra ``(title, rows)`` tables.
        figures: PNG paths relative to the run directory.
        runtime_s: Wall-clock seconds of the invocation that produced the results.
        compute_s: Sum of the units' runtimes (all invocations).
        n_units: Number of units.
        n_computed: Units computed by the producing invocation.
        n_reused: Units reused from an earlier invocation.
        failures: ``{key: {"error": ..., "traceback": ...}}`` of failed units.
        notes: Extra remarks (e.g. errors raised by ``analyze`` or ``plot``).
        env: Environment information (:func:`dynstab_repro.io.environment_info`).
    """

    name: str
    title: str
    description: str = ""
    spec_reference: str = ""
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

    @property
    def passed(self) -> bool:
        """All claims pass, there is at least one claim, and no unit failed."""
        return bool(self.claims) and all(c.passed for c in self.claims) and not self.failures


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
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


def _status_line(data: ReportData) -> str:
    n_pass = sum(c.passed for c in data.claims)
    verdict = "PASS" if data.passed else "FAIL"
    line = f"**{verdict}**: {n_pass}/{len(data.claims)} claims pass"
    if data.failures:
        line += f"; {len(data.failures)} of {data.n_units} units failed"
    return line + "."


def _runtime_line(data: ReportData) -> str:
    parts = [f"{data.n_units} units ({data.n_computed} computed now, {data.n_reused} reused)"]
    if data.runtime_s is not None:
        parts.append(f"wall time of this invocation {data.runtime_s:.1f} s")
    if data.compute_s is not None:
        parts.append(f"sum of unit runtimes {data.compute_s:.1f} s")
    return "; ".join(parts) + "."


def render_markdown(data: ReportData) -> str:
    """The report as Markdown (figures linked relative to the run directory)."""
    out = [f"# {data.title or data.name}", ""]
    out.append(
        f"Experiment `{data.name}`; spec: {data.spec_reference or 'n/a'}; profile: "
        f"`{data.profile}`; overrides: `{_fmt(list(data.overrides))}`."
    )
    out += ["", _status_line(data), ""]
    if data.description:
        out += [data.description, ""]
    out += ["## Claims", ""]
    if data.claims:
        claim_rows = [[c.id, c.statement, c.criterion, c.measured, c.status] for c in data.claims]
        out.append(_md_table(["id", "claim", "criterion", "measured", "result"], claim_rows))
    else:
        out.append("No claims were checked.")
    out.append("")
    if data.ambiguities:
        out += ["## Documented defaults for the spec's ambiguities", ""]
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


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], status_col: int = -1) -> str:
    parts = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = f' class="{str(c).lower()}"' if i == status_col else ""
            cells.append(f"<td{cls}>{_h(c)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


_CSS = """
body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}
td,th{border:1px solid #bbb;padding:0.25rem 0.5rem;vertical-align:top;text-align:left}
th{background:#eee}.pass{background:#d8f5d8;font-weight:bold}.fail{background:#f8d0d0;font-weight:bold}
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
        f"<p>Experiment <code>{html.escape(data.name)}</code>; spec: "
        f"{html.escape(data.spec_reference or 'n/a')}; profile: <code>{html.escape(data.profile)}"
        f"</code>; overrides: <code>{_h(list(data.overrides))}</code>.</p>",
        f'<p class="{"pass" if data.passed else "fail"}">'
        + html.escape(_status_line(data).replace("**", ""))
        + "</p>",
    ]
    if data.description:
        out.append(f"<p>{html.escape(data.description)}</p>")
    out.append("<h2>Claims</h2>")
    if data.claims:
        claim_rows = [[c.id, c.statement, c.criterion, c.measured, c.status] for c in data.claims]
        out.append(_html_table(["id", "claim", "criterion", "measured", "result"], claim_rows, 4))
    else:
        out.append("<p>No claims were checked.</p>")
    if data.ambiguities:
        out.append("<h2>Documented defaults for the spec's ambiguities</h2>")
        out.append(_html_table(["id", "default used"], list(data.ambiguities.items())))
    for title, rows in data.tables:
        out.append(f"<h2>{html.escape(title)}</h2>")
        out.append(_html_table(*_dict_rows(rows)) if rows else "<p>(empty)</p>")
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


def render_summary_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Summary across experiments: one row per claim (experiment | claim | measured | result).

    Args:
        rows: One dict per experiment with keys ``name``, ``title``, ``dir``, ``passed``,
            ``claims`` (list of claim dicts) and ``failed_units`` (list of keys).
        title: Heading.
    """
    n_pass = sum(bool(r["passed"]) for r in rows)
    out = [f"# {title}", "", f"{n_pass}/{len(rows)} experiments pass.", ""]
    out.append(
        _md_table(
            ["experiment", "result", "claims passed", "failed units", "report"],
            [
                [
                    r["name"],
                    "PASS" if r["passed"] else "FAIL",
                    f"{sum(c['passed'] for c in r['claims'])}/{len(r['claims'])}",
                    len(r["failed_units"]),
                    f"[report]({r['dir']}/report.md)",
                ]
                for r in rows
            ],
        )
    )
    out += ["", "## All claims", ""]
    claim_rows = [
        [r["name"], c["id"], c["statement"], c["measured"], "PASS" if c["passed"] else "FAIL"]
        for r in rows
        for c in r["claims"]
    ]
    out.append(_md_table(["experiment", "id", "claim", "measured", "result"], claim_rows))
    return "\n".join(out) + "\n"
