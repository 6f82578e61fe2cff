"""The report as a LaTeX document for papers: booktabs tables (one per display table) and the figures
included from ``figures/<name>.pdf`` beside it. Lays out what the sections hold; computes nothing."""

from __future__ import annotations

import unicodedata

import pandas as pd

#: Longer tables stay in the CSV report: a float cannot break across pages.
MAX_ROWS = 40

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "±": r"$\pm$", "≥": r"$\geq$", "≤": r"$\leq$", "−": "--", "–": "--",
            "φ": r"$\varphi$", "χ": r"$\chi$", "‡": r"$\ddagger$", "×": r"$\times$", "α": r"$\alpha$",
            "Δ": r"$\Delta$", "·": r"$\cdot$", "→": r"$\rightarrow$", "Σ": r"$\Sigma$", "∅": r"$\emptyset$",
            "—": "---", "…": r"\ldots{}", "š": r"\v{s}", "≈": r"$\approx$", "√": r"$\surd$", "²": r"$^2$"}  # fmt: skip


def escape(text: object) -> str:
    """``text`` with LaTeX's special characters (and the report's few non-ASCII symbols) escaped."""
    return "".join(_SPECIAL.get(ch) or (ch if ch.isascii() else _ascii(ch)) for ch in str(text))


def _ascii(ch: str) -> str:
    """A character without a LaTeX mapping: its accent-stripped letter, else its Unicode name."""
    base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return base or f"[{unicodedata.name(ch, 'U+%04X' % ord(ch)).lower()}]"


def booktabs(df: pd.DataFrame, caption: str = "") -> str:
    """One ``table`` environment with a booktabs ``tabular`` (left-aligned columns), footnotes below."""
    cols = "l" * len(df.columns)
    head = " & ".join(escape(c) for c in df.columns) + r" \\"
    body = "\n".join(" & ".join(escape("" if pd.isna(v) else v) for v in row) + r" \\"
                     for row in df.itertuples(index=False))  # fmt: skip
    notes = "".join(f"\n\\par\\footnotesize {escape(n)}" for n in df.attrs.get("footnotes", []) if n)
    return (f"\\begin{{table}}[htbp]\n\\centering\\scriptsize\n\\caption{{{escape(caption)}}}\n"
            f"\\resizebox{{\\linewidth}}{{!}}{{%\n\\begin{{tabular}}{{{cols}}}\n\\toprule\n{head}\n\\midrule\n{body}\n"
            f"\\bottomrule\n\\end{{tabular}}}}{notes}\n\\end{{table}}\n")  # fmt: skip


def render_latex(sections, title: str = "mmfair report", figures_dir: str = "figures") -> str:
    """A complete document: per section its reading, figures (``figures_dir/<name>.pdf``) and tables."""
    parts = [r"\documentclass{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
             r"\usepackage{graphicx}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
             f"\\title{{{escape(title)}}}", r"\date{}", r"\begin{document}", r"\maketitle"]  # fmt: skip
    for s in sections:
        parts += [f"\\section{{{escape(s.title)}}}", escape(s.reading.replace("`", "")), ""]
        for name, caption, _ in s.figures:
            parts.append(f"\\begin{{figure}}[htbp]\n\\centering\n\\includegraphics[width=\\linewidth]"
                         f"{{{figures_dir}/{name}.pdf}}\n\\caption{{{escape(caption)}}}\n\\end{{figure}}\n")  # fmt: skip
        for table in s.tables:
            if len(table) > MAX_ROWS:
                parts.append(f"{escape(table.attrs.get('title', ''))}: {len(table)} rows, in report.csv "
                             "(`mmfair report --format csv`).\n".replace("`", ""))
            elif len(table):
                parts.append(booktabs(table, table.attrs.get("title", "")))
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
