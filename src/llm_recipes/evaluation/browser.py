"""Render a report in Debian's headless Chromium: a screenshot, and a check that the page rendered with every image
decoded (used by the tests and to make the README's screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from llm_recipes.errors import ConfigError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const report = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
                  tables: document.querySelectorAll('table').length, height: document.body.scrollHeight};
  const pre = document.createElement('pre'); pre.id = 'render-probe'; pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        raise ConfigError("chromium not found: apt-get install chromium")
    return path


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="llm_recipes_chromium_") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1100, height: int = 2400) -> Path:
    png_path = Path(png_path).resolve()
    _run([f"--screenshot={png_path}", f"--window-size={width},{height}", Path(html_path).resolve().as_uri()])
    if not png_path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {html_path}")
    return png_path


def render_check(html_path: str | Path) -> dict:
    """Load a copy of the page with a probe script; returns {images, broken: [alt...], tables, height}."""
    html_path = Path(html_path).resolve()
    probe = html_path.with_name(f".probe-{html_path.name}")
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _run(["--dump-dom", probe.as_uri()]).stdout
    finally:
        probe.unlink()
    found = re.search(r'<pre id="render-probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the page did not finish loading in chromium")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
