"""Charts drawn on the server as inline SVG: nothing is fetched, so a store's office without
internet sees them, and a test can read their numbers in the page (each bar has a <title>).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def bars(values: Sequence[int], labels: Sequence[str], *, title: str, width: int = 560, height: int = 140,
         color: str = "#2f6f4f") -> Markup:
    """Vertical bars, one per value, with the label and value in each bar's tooltip."""
    top = max([*values, 1])
    n = max(len(values), 1)
    gap = 2 if n < 60 else 1
    w = (width - 40) / n
    parts = [(f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height + 20}" '
             f'width="100%" preserveAspectRatio="none"><title>{escape(title)}</title>'),
             f'<text x="0" y="10" class="axis">{top:,}</text>'.replace(",", "."),
             f'<line x1="38" y1="{height}" x2="{width}" y2="{height}" class="base"/>']
    for i, (v, label) in enumerate(zip(values, labels, strict=True)):
        h = (height - 14) * v / top
        x = 40 + i * w
        parts.append(f'<rect x="{_num(x)}" y="{_num(height - h)}" width="{_num(max(w - gap, 1))}" '
                     f'height="{_num(h)}" fill="{color}"><title>{escape(label)}: {v}</title></rect>')
    if labels:
        parts.append(f'<text x="40" y="{height + 16}" class="axis">{escape(labels[0])}</text>')
        parts.append(f'<text x="{width}" y="{height + 16}" class="axis" text-anchor="end">{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def hbars(items: Sequence[tuple[str, int]], *, title: str, width: int = 640, color: str = "#b5651d") -> Markup:
    """Horizontal bars with their label and value written beside them."""
    top = max([v for _, v in items] + [1])
    row = 24
    height = row * max(len(items), 1)
    parts = [(f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
             f'width="100%"><title>{escape(title)}</title>')]
    for i, (label, v) in enumerate(items):
        w = (width - 300) * v / top
        y = i * row
        parts.append(f'<text x="0" y="{y + 16}" class="label">{escape(label)}</text>')
        parts.append(f'<rect x="230" y="{y + 4}" width="{_num(w)}" height="16" fill="{color}">'
                     f'<title>{escape(label)}: {v}</title></rect>')
        parts.append(f'<text x="{_num(236 + w)}" y="{y + 16}" class="value">{v}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def spark(values: Sequence[int], *, title: str, width: int = 160, height: int = 32) -> Markup:
    """A small line of values over time (a segment's size)."""
    if not values:
        return Markup("")
    top = max([*values, 1])
    step = width / max(len(values) - 1, 1)
    pts = " ".join(f"{_num(i * step)},{_num(height - 2 - (height - 4) * v / top)}" for i, v in enumerate(values))
    return Markup(f'<svg class="spark" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
                  f'width="{width}" height="{height}"><title>{escape(title)}</title>'
                  f'<polyline points="{pts}" fill="none" stroke="#2f6f4f" stroke-width="2"/></svg>')
