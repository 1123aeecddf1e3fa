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


class Page:
    """A live page in headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
    no port, no client library): type into it, click, read the DOM. `--dump-dom` only reads a page once it has
    loaded, and the chat page's test must type, click and watch a streamed reply arrive."""

    def __init__(self, url: str, timeout: float = 60.0):
        import os

        self.timeout, self.calls, self.pending = timeout, 0, b""
        self.profile = tempfile.TemporaryDirectory(prefix="llm_recipes_chromium_")
        to_browser, from_us = os.pipe()
        to_us, from_browser = os.pipe()

        def wire_pipes() -> None:  # the protocol's fixed descriptors: 3 in, 4 out
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        flags = [f for f in FLAGS if not f.startswith("--virtual-time-budget")]  # real time: the reply streams
        self.process = subprocess.Popen([chromium(), *flags, "--remote-debugging-pipe",
                                         f"--user-data-dir={self.profile.name}", "about:blank"],
                                        pass_fds=(3, 4), preexec_fn=wire_pipes, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self.writer, self.reader = os.fdopen(from_us, "wb", buffering=0), os.fdopen(to_us, "rb", buffering=0)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            loaded = self.call("Page.navigate", {"url": url}, session=True)
            if loaded.get("errorText"):
                raise RuntimeError(f"chromium could not load {url}: {loaded['errorText']}")
            self.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'")
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self.calls += 1
        message = {"id": self.calls, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.pending:
                data = self.reader.read(1 << 16)
                if not data:
                    raise RuntimeError(f"chromium closed the DevTools pipe during {method}")
                self.pending += data
            line, self.pending = self.pending.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self.calls:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error'].get('message')}")
                return answer["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails'].get('text')} "
                               f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def type(self, selector: str, text: str) -> None:
        """Focus the element and type the text as keyboard input."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text}, session=True)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll until the expression is truthy; returns its value."""
        import time

        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"not true after {timeout or self.timeout:.0f} s: {expression}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.writer.close()
        self.reader.close()
        self.profile.cleanup()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
