"""The HTML report of an evaluation: one self-contained file (images inline, no scripts, no
network) with the table, the identity / target-similarity trade-off plot and the image grid."""

from __future__ import annotations

import base64
import html
import io
import os
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_path
from .api import Evaluation

PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 560, 380, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid td { padding: 2px; text-align: center; font-size: 12px; }
.grid img { display: block; width: 160px; height: 160px; }
.muted { color: #666; }
.warn { color: #a60; }
"""


def primary_judge(evaluation: Evaluation) -> str:
    """The judge the plot uses: the CLIP the first essence was extracted with, if judged."""
    wanted = evaluation.essences[0].extraction_clip if evaluation.essences else None
    return wanted if wanted in evaluation.judges else evaluation.judges[0]


def trade_off_svg(evaluation: Evaluation, judge: str) -> str:
    """Identity (y) against target similarity (x), one line per essence through its strengths."""
    series = {}
    for row in evaluation.rows:
        x, y = row.target_similarity[judge].mean, row.identity.mean
        if x is not None and y is not None:
            series.setdefault(row.essence, []).append((x, y, row.strength))
    points = [p for line in series.values() for p in line]
    if not points:
        return "<p class='muted'>nothing to plot</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = _padded(min(xs), max(xs))
    y0, y1 = _padded(min(ys), max(ys))

    def px(x: float) -> float:
        return MARGIN + (x - x0) / (x1 - x0) * (PLOT_WIDTH - 2 * MARGIN)

    def py(y: float) -> float:
        return PLOT_HEIGHT - MARGIN - (y - y0) / (y1 - y0) * (PLOT_HEIGHT - 2 * MARGIN)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{PLOT_WIDTH}' height='{PLOT_HEIGHT}' "
        f"viewBox='0 0 {PLOT_WIDTH} {PLOT_HEIGHT}' font-size='11' font-family='sans-serif'>",
        f"<rect x='{MARGIN}' y='{MARGIN}' width='{PLOT_WIDTH - 2 * MARGIN}' height='{PLOT_HEIGHT - 2 * MARGIN}' "
        "fill='none' stroke='#999'/>",
    ]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(f"<text x='{px(xv):.1f}' y='{PLOT_HEIGHT - MARGIN + 16}' text-anchor='middle'>{xv:.3f}</text>")
        parts.append(f"<text x='{MARGIN - 6}' y='{py(yv) + 4:.1f}' text-anchor='end'>{yv:.3f}</text>")
    parts.append(f"<text x='{PLOT_WIDTH / 2}' y='{PLOT_HEIGHT - 12}' text-anchor='middle'>"
                 f"target similarity ({html.escape(judge)} cosine) →</text>")
    parts.append(f"<text x='14' y='{PLOT_HEIGHT / 2}' text-anchor='middle' "
                 f"transform='rotate(-90 14 {PLOT_HEIGHT / 2})'>identity kept (ArcFace cosine) →</text>")
    for n, (essence, line) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        line = sorted(line, key=lambda p: p[2])
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in line)
        parts.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>")
        for x, y, strength in line:
            parts.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3.5' fill='{colour}'/>")
            parts.append(f"<text x='{px(x) + 5:.1f}' y='{py(y) - 5:.1f}' fill='{colour}'>{strength:g}</text>")
        parts.append(f"<text x='{MARGIN + 8}' y='{MARGIN + 16 + 14 * n}' fill='{colour}'>"
                     f"{html.escape(essence)}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _padded(low: float, high: float) -> tuple[float, float]:
    span = high - low
    pad = span * 0.08 if span > 0 else max(abs(low) * 0.05, 0.01)
    return low - pad, high + pad


def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(evaluation: Evaluation) -> str:
    judges = evaluation.judges
    fid = evaluation.fid is not None
    head = ["essence", "strength", "identity", "identity leak",
            *[f"target sim. {j}" for j in judges], *(["FID"] if fid else []), *[f"consistency {j}" for j in judges]]
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in evaluation.rows:
        cells = [row.essence, f"{row.strength:g}", row.identity.format(), row.identity_leak.format(),
                 *[row.target_similarity[j].format() for j in judges],
                 *([_fid_cell(row)] if fid else []),
                 *["n/a" if row.consistency[j] is None else f"{row.consistency[j]:.3f}" for j in judges]]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _fid_cell(row) -> str:
    return "n/a" if row.fid is None else row.fid.format()


def _fid_note(evaluation: Evaluation) -> str:
    """What the FID column is, from how many images, and the warning when they are too few."""
    info = evaluation.fid
    if info is None:
        return ""
    generated = len(evaluation.sources)
    text = (f"<p><b>FID</b>: Fréchet Inception Distance between the {generated} image(s) of each row and "
            f"{info['real_images']} real image(s) in {html.escape(str(info['real']))} (lower is closer to real "
            f"faces; Inception {html.escape(str(info['inception']))}).</p>")
    if info.get("warning"):
        text += f"<p class='warn'>{html.escape(info['warning'])}</p>"
    return text


def _grid(evaluation: Evaluation) -> str:
    if not evaluation.grid:
        return "<p class='muted'>no images</p>"
    columns = [(None, 0.0)] + [(e.label, s) for e in evaluation.essences for s in e.strengths]
    head = "".join(
        f"<th>{'source' if label is None else html.escape(label) + f' @ {strength:g}'}</th>"
        for label, strength in columns
    )
    lines = [f"<table class='grid'><tr><th>source</th>{head}</tr>"]
    for entry in evaluation.grid:
        cells = []
        for column in columns:
            image = entry["images"].get(column)
            cells.append(f"<td><img alt='' src='{_data_uri(image)}'></td>" if image is not None else "<td></td>")
        lines.append(f"<tr><td>{html.escape(entry['source'])}</td>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def render_html(evaluation: Evaluation) -> str:
    from ..version import __version__

    judge = primary_judge(evaluation)
    essences = "".join(
        f"<li><b>{html.escape(e.label)}</b> ({html.escape(e.source)}), target {html.escape(e.target)} "
        f"({html.escape(e.target_face)}), extracted with {html.escape(e.extraction_clip)}</li>"
        for e in evaluation.essences
    )
    failed = "".join(f"<li>{html.escape(f['source'])}: {html.escape(f['reason'])}</li>" for f in evaluation.failures)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>essencekit evaluation</title>
<style>{STYLE}</style></head><body>
<h1>essencekit evaluation</h1>
<p class="muted">essencekit {html.escape(__version__)}, {stamp}; generator {html.escape(evaluation.generator)};
identity model {html.escape(evaluation.identity_model)}; CLIP judges {html.escape(', '.join(evaluation.judges))};
{len(evaluation.sources)} source(s){f', {len(evaluation.failures)} failed' if evaluation.failures else ''}.</p>
<ul>{essences}</ul>
<h2>Measures</h2>
<p>Mean ± standard deviation over the sources. <b>identity</b>: ArcFace cosine between each source and its
edit (higher keeps the person). <b>identity leak</b>: ArcFace cosine between the edit and the target's face
(high means the target's identity was copied, not its essence). <b>target sim.</b>: CLIP cosine between the
edit and the target. <b>consistency</b>: mean pairwise cosine of the CLIP-space changes across sources.
Strength 0 is the sources themselves.</p>
{_fid_note(evaluation)}
{_table(evaluation)}
<h2>Choosing a strength</h2>
<p>Each point is one strength: further right looks more like the target, higher keeps more of the source's
identity.</p>
{trade_off_svg(evaluation, judge)}
<h2>Images</h2>
{_grid(evaluation)}
{f'<h2>Failed sources</h2><ul>{failed}</ul>' if failed else ''}
</body></html>
"""


def write_report(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Write the HTML report atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(render_html(evaluation), encoding="utf-8")
    return path
