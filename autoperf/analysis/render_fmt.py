"""The cells and tables every renderer shares: numbers, limits, percentages, short text, the terminal
table, Markdown cells, JSON."""
from __future__ import annotations

__all__ = ["render_json"]


def _ms(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"


def _limit(v):
    """A configured limit (an SLA): as written when whole ("300", "1,500"), else like a measurement."""
    if v is not None and float(v).is_integer():
        return f"{v:,.0f}"
    return _ms(v)


def _pct(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}%"


def _num(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return f"{v:,}"


def _short(s, n=70):
    if s is None:
        return ""
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _table(headers, rows, colour=False, flags=None, maxw=60):
    rows = [[_short(c, maxw) if isinstance(c, str) else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def numeric(s):
        return s[:1].isdigit() or s[:1] in "-+" or s == "n/a"

    def fmt_row(row):
        return "  ".join((c.rjust(widths[i]) if numeric(c) and i > 0 else c.ljust(widths[i]))
                         for i, c in enumerate(row)).rstrip()

    lines = [fmt_row(headers), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        line = fmt_row(row)
        if colour and flags and i < len(flags) and flags[i]:
            line = f"\x1b[31m{line}\x1b[0m"
        lines.append(line)
    if colour:
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    return lines


def _md_cell(c):
    return str(c).replace("|", "\\|").replace("\n", " ")


def render_json(r: dict) -> str:
    import orjson
    return orjson.dumps(r, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
