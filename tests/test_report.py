"""`tdxcore report`: one self-contained HTML file, checked for structure here and rendered by a
real browser (headless Chromium) where one is installed; CI installs it and sets
TDXCORE_REQUIRE_BROWSER=1, under which a missing browser fails instead of skipping."""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from tdxcore.compare import VARIANTS
from tdxcore.scenario import PRESETS


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    r = subprocess.run([sys.executable, "-m", "tdxcore", "report", "--max-schedules", "4000", "-o", str(path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return path


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids, self.fetches = [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "href" in a:
            self.hrefs.append(a["href"])
        if "id" in a:
            self.ids.add(a["id"])
        if tag in ("script", "img", "link") and (a.get("src") or (tag == "link" and a.get("href"))):
            self.fetches.append(a)


def test_the_report_is_self_contained_and_every_cell_link_has_a_target(report):
    text = report.read_text()
    p = Links()
    p.feed(text)
    assert not p.fetches and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    cell_links = [h for h in p.hrefs if h.startswith(("#cx-", "#cell-"))]
    assert all(h[1:] in p.ids for h in cell_links)
    # Every cell of both matrices links somewhere: a harm to its counterexample, else its results.
    cells = re.findall(r"<td class=\"(?:harm|ok)\">(.*?)</td>", text)
    assert cells and all(part.startswith('<a href="#') or part == "-" for c in cells for part in c.split(" / "))
    assert any(h.startswith("#cx-") for h in cell_links) and any(h.startswith("#cell-") for h in cell_links)
    for policy, *_ in VARIANTS:
        assert f"<th>{policy}</th>" in text
    for scenario in PRESETS:
        assert f"<th>{scenario}</th>" in text
    assert "tdxcore replay \\" in text and "Environment" in text and "Conclusion" in text


def browser() -> str:
    found = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if found is None:
        if os.environ.get("TDXCORE_REQUIRE_BROWSER") == "1":
            pytest.fail("TDXCORE_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no headless browser installed (apt install chromium); CI runs this with one")
    return found


def run_browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=120)


def test_headless_chromium_renders_the_matrix_and_a_cells_timeline(report, tmp_path):
    target = re.search(r'href="#(cx-[^"]+)"', report.read_text()).group(1)
    r = run_browser("--virtual-time-budget=3000", "--dump-dom", f"file://{report}#{target}")
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body[^>]*>", r.stdout).group(0)
    assert 'data-errors="0"' in body, body  # the page's error counter saw no script error
    assert f'data-shown="{target}"' in body and 'data-shown-timeline="yes"' in body
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    rows = re.findall(r'<tr class="policy"><th>([^<]+)</th>', r.stdout)
    assert set(rows) == {v[0] for v in VARIANTS} and len(rows) == 2 * len(VARIANTS)  # one matrix per mode
    # A cell without harm opens its results.
    safe = re.search(r'href="#(cell-[^"]+)"', report.read_text()).group(1)
    r = run_browser("--virtual-time-budget=3000", "--dump-dom", f"file://{report}#{safe}")
    assert f'data-shown="{safe}"' in r.stdout and re.search(f'<details id="{re.escape(safe)}" open', r.stdout)
    shot = tmp_path / "report.png"
    s = run_browser("--window-size=1300,1800", f"--screenshot={shot}", f"file://{report}")
    assert s.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", s.stderr[-2000:]
