"""The rollout viewer in a real browser: headless Chromium opens the page the way a user does (a local file).

The page's ``#selftest`` mode (``robosteer.explanation.viewer``) moves the step slider once after load and
writes what it saw into ``<pre id="selftest-result">``: the hash of the drawn frame image before and after,
the step marker, the JavaScript errors (``window.onerror``, unhandled rejections, failed redraws). Chromium's
``--dump-dom`` returns that DOM; ``--virtual-time-budget`` lets the page's timers and promises finish first.
That the check fails on a page that throws is tested too, with deliberately broken pages.

Skipped, saying why, where Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from robosteer.explanation.viewer import build_viewer

from .test_explain_viewer import synthetic_rollout

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium): "
                                                         "the viewer's browser test needs a headless browser")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=20000")


def _chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)  # a fresh profile every run
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                          text=True, timeout=120)


def _selftest(tmp_path: Path, page: str) -> dict:
    path = tmp_path / "viewer.html"
    path.write_text(page, encoding="utf-8")
    run = _chromium(tmp_path, path.as_uri() + "#selftest", "--dump-dom")
    found = re.search(r'<pre id="selftest-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page wrote no self-test result (chromium exit {run.returncode}): {run.stderr[-3000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def page() -> tuple:
    rollout = synthetic_rollout(views=("agentview", "wrist"), base=True, highlight=("llm.L1H2",))
    return rollout, build_viewer(rollout)


def test_the_viewer_draws_without_errors_and_the_slider_moves_the_frame(page, tmp_path):
    rollout, text = page
    result = _selftest(tmp_path, text)
    assert result["errors"] == [] and "failure" not in result, result
    assert result["images"] == len(rollout.views)  # one drawn frame per camera
    assert result["start"] == 0 and result["target"] == result["step"] == result["marker"] == rollout.length
    assert result["before"] != result["after"], "moving the slider did not change the drawn frame"
    assert result["bars"] == rollout.top and result["label"].startswith(f"step {rollout.length} of {rollout.length}")


BROKEN = {  # where a deliberate error goes -> what the page must report
    "a script that throws": ("<body>", "<body><script>throw new Error('deliberate error');</script>", "deliberate error"),
    "a redraw that fails": ("</head>", "<script>Plotly.restyle = function () { throw new Error('deliberate restyle');"
                            " };</script></head>", "deliberate restyle"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_check_sees_a_page_that_throws(case, page, tmp_path):
    anchor, injected, message = BROKEN[case]
    rollout, text = page
    assert text.count(anchor) == 1
    result = _selftest(tmp_path, text.replace(anchor, injected))
    assert any(message in e for e in result["errors"]), result


def test_a_screenshot_of_the_viewer(page, tmp_path):
    from PIL import Image

    rollout, text = page
    path, shot = tmp_path / "viewer.html", tmp_path / "viewer.png"
    path.write_text(text, encoding="utf-8")
    run = _chromium(tmp_path, path.as_uri() + "#step=3", f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.is_file(), f"no screenshot (chromium exit {run.returncode}): {run.stderr[-3000:]}"
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (1000, 1400) and image.std() > 10  # drawn, not a blank page
