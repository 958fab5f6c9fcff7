"""A table as Markdown (also what the terminal shows), CSV and LaTeX (booktabs)."""
from __future__ import annotations

import csv
import io
import itertools

from quail_repro.report.cells import Spread, fmt
from quail_repro.report.table import Table


def to_markdown(t: Table) -> str:
    def esc(s: str) -> str:  # a bare | would end the cell ("|Δw|")
        return s.replace("|", "\\|")

    headers = [esc(h) for h in t.headers]
    cells = [[esc(fmt(v, f)) for v, f in zip(row, t.formats)] for row in t.rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(parts):
        return "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells]
    return "\n".join(out)


def render_markdown(t: Table) -> str:
    parts = [f"## {t.name}" + (f": {t.title}" if t.title else ""), "", to_markdown(t), ""]
    parts += [f"- {n}" for n in t.notes]
    for x in t.extra:
        parts += ["", f"### {x.title}", "", to_markdown(x)] + ([""] if x.notes else []) + [f"- {n}" for n in x.notes]
    return "\n".join(parts).rstrip() + "\n"


def render_csv(t: Table) -> str:
    """One CSV column per table column; a column over seeds becomes ``mean``, ``sd`` and ``n``
    columns (and ``pooled``, ``ci95 low``/``high`` where it has a pooled estimate and its bootstrap interval)."""
    def spread_parts(i: int) -> list[str]:
        cells = [row[i] for row in t.rows if isinstance(row[i], Spread)]
        if not cells:
            return []
        return (["mean", "sd", "n"] + (["pooled"] if any(c.pooled for c in cells) else [])
                + (["ci95 low", "ci95 high"] if any(c.interval for c in cells) else []))

    parts = [spread_parts(i) for i in range(len(t.columns))]

    def values(cell, column_parts: list[str]) -> list:
        if not column_parts:
            return ["" if cell is None else cell]
        if not isinstance(cell, Spread):  # a published number, a status text: in the mean column
            return ["" if cell is None else cell] + [""] * (len(column_parts) - 1)
        low, high = cell.interval or ("", "")
        by_part = {"mean": cell.mean, "sd": cell.sd, "n": cell.n, "pooled": cell.point, "ci95 low": low,
                   "ci95 high": high}
        return ["" if by_part[p] is None else by_part[p] for p in column_parts]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([f"{h} {p}" if p else h for h, ps in zip(t.headers, parts) for p in (ps or [""])])
    for row in t.rows:
        w.writerow([v for cell, ps in zip(row, parts) for v in values(cell, ps)])
    return buf.getvalue()


_TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}",
        "↓": r"$\downarrow$", "↑": r"$\uparrow$", "→": r"$\rightarrow$", "Δ": r"$\Delta$", "−": "$-$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s)


def to_latex(t: Table) -> str:
    align = "".join("l" if f == "text" else "r" for f in t.formats)
    lines = [r"\begin{tabular}{" + align + "}", r"\toprule"]
    if any(g for g, _ in t.columns):  # a header row of column groups (precisions)
        head, rules, col = [], [], 1
        for g, run in itertools.groupby(t.columns, key=lambda c: c[0]):
            n = len(list(run))
            head.append(rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(g)}}}" if g else " & ".join([""] * n))
            if g:
                rules.append(rf"\cmidrule(lr){{{col}-{col + n - 1}}}")
            col += n
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    lines.append(" & ".join(tex_escape(n) for _, n in t.columns) + r" \\")
    lines.append(r"\midrule")
    for row in t.rows:
        lines.append(" & ".join(tex_escape(fmt(v, f)) for v, f in zip(row, t.formats)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def render_latex(t: Table) -> str:
    """A booktabs table (\\usepackage{booktabs,graphicx}); notes follow as a footnote-size paragraph."""
    caption = tex_escape(t.name + (": " + t.title if t.title else ""))
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
           rf"\label{{tab:{t.name}}}", r"\resizebox{\linewidth}{!}{%", to_latex(t) + "}"]
    if t.notes:
        out.append(r"\par\footnotesize " + " ".join(tex_escape(n) for n in t.notes))
    out.append(r"\end{table}")
    for x in t.extra:
        out += ["", r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(x.title)}}}",
                r"\resizebox{\linewidth}{!}{%", to_latex(x) + "}"]
        if x.notes:
            out.append(r"\par\footnotesize " + " ".join(tex_escape(n) for n in x.notes))
        out.append(r"\end{table}")
    return "\n".join(out) + "\n"
