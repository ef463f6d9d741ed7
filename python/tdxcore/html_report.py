"""`tdxcore report`: one self-contained HTML file (no network fetch): the conclusion, the verdict
matrix with each cell linking to its counterexample (the prose, the email text, the timeline and
the replay token with a copy button) or, where no harm was found, to its results; every cell's
per-property results, certificate and contract breaches' replay commands, the bench tables and
plots given `tdxcore bench --json` output, and the environment."""

from __future__ import annotations

import datetime
import html
import os
import platform
from typing import Any, Optional, Sequence

from tdxcore import MODEL_VERSION, __version__
from tdxcore.compare import Cell, legend
from tdxcore.conclusion import conclusion
from tdxcore.email_text import wrap_token

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; font-family: monospace; font-size: 13px; text-align: left; }
td.harm { background: #fde2e0; }
td.ok { background: #e6f4ea; }
section.cx { border-top: 2px solid #888; margin-top: 2em; }
section.cx:target { background: #fffbe6; }
svg { max-width: 100%; height: auto; }
button { margin-left: 0.5em; }
"""

SCRIPT = """
window.tdxErrors = 0;
window.addEventListener('error', function () { window.tdxErrors += 1;
  document.body.dataset.errors = window.tdxErrors; });
function copyToken(id) {
  var text = document.getElementById(id).textContent;
  if (navigator.clipboard) { navigator.clipboard.writeText(text).catch(function () {}); }
}
function showTarget() {
  var id = location.hash.slice(1);
  var el = id && document.getElementById(id);
  if (el && el.tagName === 'DETAILS') { el.open = true; }
  document.body.dataset.shown = el ? id : '';
  document.body.dataset.shownTimeline = el && el.querySelector('svg') ? 'yes' : 'no';
}
window.addEventListener('hashchange', showTarget);
window.addEventListener('DOMContentLoaded', function () {
  document.body.dataset.errors = window.tdxErrors; showTarget(); });
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _cell_id(c: Cell, kind: str = "cell") -> str:
    return f"{kind}-{c.policy}-{c.scenario}-{c.split_alloc}-{c.alloc_failures}"


def _cx_id(c: Cell) -> str:
    return _cell_id(c, "cx")


def _cell_html(c: Optional[Cell]) -> str:
    """A cell links to its harm's counterexample, or (no harm) to its properties' results."""
    if c is None:
        return "-"
    target = _cx_id(c) if c.result.counterexample is not None else _cell_id(c)
    return f'<a href="#{_e(target)}">{_e(c.text)}</a>'


def _matrix(cells: Sequence[Cell], mode: str) -> str:
    cells = [c for c in cells if c.split_alloc == mode]
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    policies = list(dict.fromkeys(c.policy for c in cells))
    index = {(c.policy, c.scenario, c.alloc_failures): c for c in cells}
    rows = ["<tr><th>policy</th>" + "".join(f"<th>{_e(s)}</th>" for s in scenarios) + "</tr>"]
    for p in policies:
        tds = []
        for s in scenarios:
            pair = [index.get((p, s, f)) for f in (0, 1)]
            harm = any(c is not None and c.harmful for c in pair)
            tds.append(f'<td class="{"harm" if harm else "ok"}">' + " / ".join(_cell_html(c) for c in pair) + "</td>")
        rows.append(f'<tr class="policy"><th>{_e(p)}</th>' + "".join(tds) + "</tr>")
    return f'<table class="matrix" data-mode="{_e(mode)}">' + "".join(rows) + "</table>"


def _properties(c: Cell) -> str:
    from tdxcore.report import _status

    rows = "".join(f"<tr><td>{_e(p.name)}</td><td>{'harm' if p.harm else 'contract'}</td><td>{_e(_status(p))}</td></tr>"
                   for p in c.result.properties.values())
    cert = c.result.certificate
    how = (f"{cert['strategy']}, {'complete' if cert['complete'] else 'not complete'}; {cert['schedules']:,} schedules, "
           f"{cert['distinct_states']:,} states, {cert['steps']:,} steps" + (f"; cut by {cert['cut_by']}" if cert.get("cut_by") else ""))
    return f"<p>{_e(how)}</p><table><tr><th>property</th><th>class</th><th>result</th></tr>{rows}</table>"


def _counterexample(c: Cell) -> str:
    from tdxcore.timeline import layout, to_svg

    cx = c.result.counterexample
    rp = cx.replay
    failures = ", one allocation failure allowed" if c.alloc_failures else ""
    token_id = f"token-{_cx_id(c)}"
    return (f'<section class="cx" id="{_e(_cx_id(c))}">'
            f"<h3>{_e(c.policy)} on {_e(c.scenario)} ({_e(c.split_alloc)}{failures}): {_e(cx.code)}</h3>"
            f"<p>{_e(cx.explain())}</p>"
            f"{to_svg(layout(rp.trace, rp.nr_vcpus, rp.hits, title=rp.title), uid='-' + _cx_id(c))}"
            f"<details><summary>every property of this cell</summary>{_properties(c)}</details>"
            f'<p>replay with <button onclick="copyToken(\'{_e(token_id)}\')">copy the command</button></p>'
            f'<pre id="{_e(token_id)}">{_e(wrap_token(cx.token))}</pre>'
            f"<pre>{_e(cx.render())}</pre></section>")


def _cell_details(c: Cell) -> str:
    """A cell's per-property results and certificate, and the replay command of each property
    it breaks (contract breaches included)."""
    replays = "".join(f"<p>{_e(name)} ({_e(p.counterexample.code)}):</p><pre>{_e(wrap_token(p.counterexample.token))}</pre>"
                      for name, p in c.result.properties.items() if p.counterexample is not None)
    return (f'<details id="{_e(_cell_id(c))}"><summary>{_e(c.policy)} x {_e(c.scenario)} ({_e(c.split_alloc)}, '
            f"{c.alloc_failures} failure(s)): {_e(c.text)}</summary>{_properties(c)}{replays}</details>")


def _bench(results: Sequence[dict[str, Any]]) -> str:
    """Bench results (`tdxcore bench --json`): a table of medians and a bar chart of time."""
    import statistics

    rows, bars = [], []
    medians = [(r["policy"], statistics.median(run["elapsed_s"] for run in r["runs"])) for r in results]
    top = max((m for _, m in medians), default=1.0) or 1.0
    for i, (policy, m) in enumerate(medians):
        rows.append(f"<tr><td>{_e(policy)}</td><td>{m * 1000:.1f}</td><td>{m / medians[0][1]:.2f}</td></tr>")
        w = 400 * m / top
        bars.append(f'<rect x="220" y="{i * 22}" width="{w:.1f}" height="16" fill="#4c8bd6"/>'
                    f'<text x="0" y="{i * 22 + 12}" font-size="12">{_e(policy)}</text>'
                    f'<text x="{224 + w:.1f}" y="{i * 22 + 12}" font-size="12">{m * 1000:.1f} ms</text>')
    chart = (f'<svg xmlns="http://www.w3.org/2000/svg" width="700" height="{22 * len(medians)}">'
             + "".join(bars) + "</svg>")
    workload = results[0]["workload"] if results else "-"
    return (f"<h2>Bench: {_e(workload)}</h2><table><tr><th>policy</th><th>median ms</th><th>x first</th></tr>"
            + "".join(rows) + "</table>" + chart)


def build(cells: Sequence[Cell], bench: Optional[Sequence[dict[str, Any]]] = None) -> str:
    """The report as one HTML document."""
    modes = list(dict.fromkeys(c.split_alloc for c in cells))
    harmful = [c for c in cells if c.result.counterexample is not None]
    env = (f"tdxcore {__version__}, model version {MODEL_VERSION}; {platform.platform()}, "
           f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
           f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>tdxcore report</title>",
             f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
             "<h1>tdxcore: every preset policy against every preset scenario</h1>",
             "<h2>Conclusion</h2>" + "".join(f"<p>{_e(line)}</p>" for line in conclusion(cells).splitlines()),
             f"<h2>Verdicts</h2><pre>{_e(legend())}</pre>"]
    for mode in modes:
        parts.append(f"<h3>split allocation: {_e(mode)}</h3>{_matrix(cells, mode)}")
    if bench:
        parts.append(_bench(bench))
    parts.append("<h2>Counterexamples</h2>")
    parts += [_counterexample(c) for c in harmful]
    parts.append("<h2>Every cell</h2>")
    parts += [_cell_details(c) for c in cells]
    parts.append(f"<h2>Environment</h2><p>{_e(env)}</p></body></html>")
    return "\n".join(parts)
