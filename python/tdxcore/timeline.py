"""A counterexample as a picture: one lane per thread with its steps as boxes, mmu_lock holds as
coloured bars under them (read and write), waits for a lock hatched, SEAMCALLs marked, a state
lane with the 2M leaf's life and the GUEST_INHIBIT store, the broken properties at their steps
and a cycle shaded.

The picture is laid out once as shapes (`layout`); `to_svg` writes them with no dependency,
`to_png` draws them with matplotlib (the `bench` extra)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence
from xml.sax.saxutils import escape

from tdxcore import _core
from tdxcore.email_text import cycles_by_start, step_words
from tdxcore.report import lock_waits, mmu_lock_holds, thread_name
from tdxcore.vocabulary import GUEST_INHIBIT_FLAG

STEP_W = 14  # pixels per step
LANE_H = 44
LEFT = 90
TOP = 56  # room for the title and the property labels
AXIS_EVERY = 5  # a step number under the lanes every this many steps
COLORS = {"read": "#4c8bd6", "write": "#d65f4c", "step": "#d9d9d9", "seamcall": "#7a4cd6",
          "leaf": "#3a9d5d", "wait": "#555555", "alloc-failed": "#111111", "inhibit": "#e0a500", "property": "#c00000", "cycle": "#fff2b3"}


@dataclass
class Shape:
    kind: str  # "rect", "line", "text"
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    fill: str = "none"
    text: str = ""
    hatch: bool = False  # drawn hatched in `fill` (a wait)
    title: str = ""  # a tooltip in SVG
    role: str = ""  # what the shape shows (tests and the HTML report select by it)


@dataclass
class Timeline:
    width: float
    height: float
    shapes: list[Shape]


def _x(n: float) -> float:
    return LEFT + (n - 1) * STEP_W


def layout(trace: Sequence[dict[str, Any]], nr_vcpus: int, hits: Sequence[dict[str, Any]] = (),
           title: str = "") -> Timeline:
    """The shapes of the picture, with `title` above it; steps are numbered as in the replay,
    on an axis under the lanes."""
    status_names = _core.status_names()
    steps = [line for line in trace if line["type"] == "step"]
    tids = sorted({line["tid"] for line in steps})
    lane = {tid: i for i, tid in enumerate(tids)}
    state_y = TOP + len(tids) * LANE_H
    n_steps = len(steps)
    shapes: list[Shape] = []
    # The cycle behind everything else (a trap is its livelock's cycle: draw one).
    for first, h in list(cycles_by_start(hits).items())[:1]:
        shapes.append(Shape("rect", _x(first), TOP - 14, (h["step"] + 1 - first) * STEP_W, state_y + LANE_H - TOP + 14,
                            COLORS["cycle"], title=f"steps {first}-{h['step']} repeat for ever", role="cycle"))
    for tid in tids:
        y = TOP + lane[tid] * LANE_H
        shapes.append(Shape("text", 8, y + 18, text=thread_name(tid, nr_vcpus), role="lane"))
        shapes.append(Shape("line", LEFT, y + LANE_H - 4, n_steps * STEP_W, 0, "#bbbbbb"))
    shapes.append(Shape("text", 8, state_y + 18, text="state", role="lane"))
    if title:
        shapes.append(Shape("text", 8, 14, text=title, role="title"))
    axis_y = state_y + LANE_H + 4
    shapes.append(Shape("text", 8, axis_y, text="step", role="axis"))
    for n in [1, *range(AXIS_EVERY, n_steps + 1, AXIS_EVERY)]:
        shapes.append(Shape("line", _x(n) + STEP_W / 2, axis_y - 12, 0, 4, "#888888", role="axis"))
        shapes.append(Shape("text", _x(n) + 1, axis_y, text=str(n), role="axis"))
    for tid, start, end, text in lock_waits(trace, nr_vcpus):
        y = TOP + lane[tid] * LANE_H
        shapes.append(Shape("rect", _x(start), y + 26, (end - start) * STEP_W, 8, COLORS["wait"], hatch=True,
                            title=f"steps {start}-{end - 1}: {text}", role="wait"))
    for tid, start, end, mode, to_end in mmu_lock_holds(trace):
        y = TOP + lane[tid] * LANE_H
        until = "to the end" if to_end else f"to step {end}"
        shapes.append(Shape("rect", _x(start), y + 26, (end + 1 - start) * STEP_W, 8, COLORS[mode],
                            title=f"mmu_lock held for {mode} from step {start} {until}", role=f"hold-{mode}"))
    leaf_from: Optional[int] = None
    for n, line in enumerate(steps, 1):
        tid, kind = line["tid"], line["kind"]
        y = TOP + lane[tid] * LANE_H
        words = step_words(line, status_names)
        role = ("seamcall" if isinstance(kind, dict) and "seamcall" in kind
                else "alloc-failed" if kind == "alloc" and line["after"] else "step")
        shapes.append(Shape("rect", _x(n) + 1, y + 4, STEP_W - 2, 18, COLORS[role], title=f"{n}: {words}", role=role))
        # The 2M leaf's life (the first 2M SPTE the run installs) and the GUEST_INHIBIT store.
        if line["obj"] == "spte" and line.get("level") == "2M" and kind in ("store", "cmpxchg"):
            now = _core.value_text("spte", line["after"], "2M")
            if now == "2M leaf" and leaf_from is None:
                leaf_from = n
            elif leaf_from is not None and now not in ("2M leaf", "FROZEN"):
                shapes.append(Shape("rect", _x(leaf_from), state_y + 6, (n - leaf_from) * STEP_W, 10, COLORS["leaf"],
                                    title=f"2M leaf {line['gfn']:#x}, steps {leaf_from}-{n}", role="leaf"))
                leaf_from = None
        if (kind == "store" and line["obj"] == "lpage_info" and line["after"] & GUEST_INHIBIT_FLAG
                and not line["before"] & GUEST_INHIBIT_FLAG and line["level"] == "2M"):
            shapes.append(Shape("rect", _x(n), state_y + 20, (n_steps + 1 - n) * STEP_W, 10, COLORS["inhibit"],
                                title=f"GUEST_INHIBIT set at step {n} ({line['level']} {line['gfn']:#x})",
                                role="inhibit"))
    if leaf_from is not None:
        shapes.append(Shape("rect", _x(leaf_from), state_y + 6, (n_steps + 1 - leaf_from) * STEP_W, 10,
                            COLORS["leaf"], title=f"2M leaf from step {leaf_from} to the end", role="leaf"))
    for i, h in enumerate(hits):
        x = _x(h["step"]) + STEP_W / 2
        shapes.append(Shape("line", x, TOP - 10, 0, state_y + LANE_H - TOP + 10, COLORS["property"],
                            title=h["summary"], role="property"))
        shapes.append(Shape("text", x + 2, TOP - 14 - 12 * (i % 2), text=f"{h['code']} @{h['step']}",
                            fill=COLORS["property"], title=h["summary"], role="property-label"))
    legend_y = axis_y + 20
    x = 8.0
    for role, color, words in (("hold-read", "read", "mmu_lock read"), ("hold-write", "write", "mmu_lock write"),
                               ("wait", "wait", "waits for a lock"), ("seamcall", "seamcall", "SEAMCALL"),
                               ("alloc-failed", "alloc-failed", "allocation failed"), ("leaf", "leaf", "2M leaf mapped"),
                               ("inhibit", "inhibit", "GUEST_INHIBIT set"), ("cycle", "cycle", "repeating cycle")):
        shapes.append(Shape("rect", x, legend_y - 9, 12, 10, COLORS[color], hatch=role == "wait", role="legend"))
        shapes.append(Shape("text", x + 16, legend_y, text=words, role="legend"))
        x += 24 + 7 * len(words)
    return Timeline(max(LEFT + (n_steps + 2) * STEP_W + 60, x, 16 + 7 * len(title)), legend_y + 10, shapes)


def to_svg(t: Timeline, uid: str = "") -> str:
    """The picture as a standalone SVG document; `uid` keeps its pattern's id unique where
    several pictures share one HTML page."""
    hatch = f"hatch{uid}"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{t.width:.0f}" height="{t.height:.0f}" '
           f'viewBox="0 0 {t.width:.0f} {t.height:.0f}" font-family="monospace" font-size="11">',
           f'<defs><pattern id="{hatch}" width="4" height="4" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="4" height="4" fill="white"/>'
           f'<line x1="0" y1="0" x2="0" y2="4" stroke="{COLORS["wait"]}" stroke-width="2"/></pattern></defs>',
           '<rect width="100%" height="100%" fill="white"/>']
    for s in t.shapes:
        title = f"<title>{escape(s.title)}</title>" if s.title else ""
        cls = f' class="{s.role}"' if s.role else ""
        if s.kind == "rect":
            fill = f"url(#{hatch})" if s.hatch else s.fill
            out.append(f'<rect{cls} x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                       f'fill="{fill}">{title}</rect>')
        elif s.kind == "line":
            out.append(f'<line{cls} x1="{s.x:.1f}" y1="{s.y:.1f}" x2="{s.x + s.w:.1f}" y2="{s.y + s.h:.1f}" '
                       f'stroke="{s.fill}" stroke-width="1.5">{title}</line>')
        else:
            fill = s.fill if s.fill != "none" else "black"
            out.append(f'<text{cls} x="{s.x:.1f}" y="{s.y:.1f}" fill="{fill}">{escape(s.text)}{title}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(t: Timeline, path: str) -> None:
    """The picture as a PNG, drawn by matplotlib (pip install 'tdxcore[bench]')."""
    try:
        import matplotlib
    except ImportError:
        from tdxcore.errors import ConfigError

        raise ConfigError("--png needs matplotlib: pip install 'tdxcore[bench]' (--svg needs nothing)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    dpi = 100
    fig = plt.figure(figsize=(t.width / dpi, t.height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, t.width)
    ax.set_ylim(t.height, 0)
    ax.axis("off")
    for s in t.shapes:
        if s.kind == "rect":
            if s.hatch:
                ax.add_patch(Rectangle((s.x, s.y), s.w, s.h, facecolor="white", edgecolor=s.fill, hatch="////",
                                       linewidth=0))
            else:
                ax.add_patch(Rectangle((s.x, s.y), s.w, s.h, facecolor=s.fill, edgecolor="none"))
        elif s.kind == "line":
            ax.plot([s.x, s.x + s.w], [s.y, s.y + s.h], color=s.fill, linewidth=1)
        else:
            ax.text(s.x, s.y, s.text, color=s.fill if s.fill != "none" else "black", fontsize=8,
                    family="monospace", va="baseline")
    fig.savefig(path, dpi=dpi, format="png")  # PNG whatever the file's name ends in
    plt.close(fig)
