#!/usr/bin/env python3
"""plot_ratios.py — the neatml/PyTorch time ratios of compare.py as an SVG bar chart.

    bench/plot_ratios.py results.json out.svg

One horizontal bar per case on a log2 axis centred on 1: a bar to the left (green) means
neatml took less time than PyTorch, to the right (orange) more. Cases without a ratio (not
available on one side) are listed with the reason in grey. Plain SVG, no plotting library.
"""
import json
import math
import sys
from xml.sax.saxutils import escape

ROW_H, BAR_H, LABEL_W, PLOT_W, RIGHT_W, TOP, BOTTOM = 26, 16, 250, 460, 90, 62, 46


def write_svg(results, path):
    cases = results.get("cases", [])
    meta = results.get("meta", {})
    ratios = [c["ratio"] for c in cases if isinstance(c.get("ratio"), (int, float)) and c["ratio"] > 0]
    span = max([2.0] + [math.ceil(abs(math.log2(r))) for r in ratios])
    span = min(span, 8.0)  # ratios beyond 256x are drawn clipped, the label keeps the value

    width = LABEL_W + PLOT_W + RIGHT_W
    height = TOP + ROW_H * max(1, len(cases)) + BOTTOM
    x1 = LABEL_W + PLOT_W / 2  # where ratio 1 sits

    def xpos(r):
        v = max(-span, min(span, math.log2(r)))
        return x1 + v / span * (PLOT_W / 2)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
           f'font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    title = "neatml time / PyTorch time (log scale; left of 1: neatml faster)"
    sub = (f"{meta.get('backend', '?')}: {meta.get('neatml_device', '?')}, "
           f"PyTorch {meta.get('torch') or 'missing'}, {meta.get('date', '')}")
    out.append(f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" '
               f'font-weight="bold">{escape(title)}</text>')
    out.append(f'<text x="{width / 2}" y="38" text-anchor="middle" fill="#555">{escape(sub)}</text>')

    bottom = TOP + ROW_H * len(cases)
    for k in range(-int(span), int(span) + 1):
        x = x1 + k / span * (PLOT_W / 2)
        label = f"{2 ** k:g}" if k >= 0 else f"1/{2 ** -k:g}"
        stroke = "#333" if k == 0 else "#ddd"
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="{stroke}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{label}</text>')
    out.append(f'<text x="{x1}" y="{bottom + 34}" text-anchor="middle" fill="#555">'
               f'ratio (neatml / PyTorch)</text>')

    for i, c in enumerate(cases):
        y = TOP + i * ROW_H
        cy = y + ROW_H / 2
        out.append(f'<text x="{LABEL_W - 8}" y="{cy + 4}" text-anchor="end">{escape(c["case"])}</text>')
        r = c.get("ratio")
        if isinstance(r, (int, float)) and r > 0:
            xr = xpos(r)
            left, w = min(x1, xr), abs(xr - x1)
            color = "#3a9b4a" if r <= 1 else "#e07b28"
            out.append(f'<rect x="{left:.1f}" y="{cy - BAR_H / 2:.1f}" width="{max(w, 1):.1f}" '
                       f'height="{BAR_H}" fill="{color}"/>')
            out.append(f'<text x="{LABEL_W + PLOT_W + 10}" y="{cy + 4}">{r:.2f}x</text>')
        else:
            why = c.get("neatml_reason") or c.get("torch_error") or "no ratio"
            why = why if len(why) <= 70 else why[:67] + "..."
            out.append(f'<text x="{LABEL_W + 4}" y="{cy + 4}" fill="#888">'
                       f'{escape("n/a: " + why)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_ratios.py results.json out.svg")
    with open(sys.argv[1]) as f:
        write_svg(json.load(f), sys.argv[2])


if __name__ == "__main__":
    main()
