"""The HTML report in a real headless browser (Chromium from Debian): it renders, with its
tables and plots. Skipped only where no Chromium is installed (CI installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_html_report_renders_in_chromium(cli, tmp_path, tiny_gpt2):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    from tests.execution.test_matrix_runner import mini_matrix

    res = cli("run", str(mini_matrix(tmp_path)), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stderr
    html = tmp_path / "run" / "report.html"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for marker in ('class="verdicts"', 'class="evidence"', 'class="costs"', 'class="models"', 'class="gates"',
                   'id="plots"', 'class="plot"', "data:image/png;base64,"):
        assert marker in text, marker
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000  # a page with content, not a blank frame
