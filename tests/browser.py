"""Headless Chromium for the tests that check a page as a person would see it.

:func:`chromium` finds Debian's ``chromium-headless-shell`` (or ``chromium``); where none is
installed and the tests run as root with apt, it installs ``chromium-headless-shell`` once,
as the project's own set-up; otherwise the test is skipped with a line saying how to get one.
:func:`check_page` loads a local HTML file with a small probe injected at the top of its
``<head>`` and returns what the probe saw after the load event: the console errors and
failed loads, the images that did not decode, and the text of the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium-headless-shell", "chromium", "chromium-browser")
PACKAGE = "chromium-headless-shell"

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(e.message || ("failed to load " + (t && (t.src || t.href))));
}, true);
var __ce = console.error;
console.error = function () { window.__errors.push([].join.call(arguments, " "));
                              __ce.apply(console, arguments); };
window.addEventListener("load", function () {
  var imgs = [].slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt || i.src.slice(0, 40); });
  var pre = document.createElement("pre");
  pre.id = "__probe";
  pre.textContent = JSON.stringify({errors: window.__errors, images: imgs.length, bad: bad});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    """The path of a headless Chromium, installing Debian's package as root if needed."""
    for name in NAMES:
        if found := shutil.which(name):
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", PACKAGE]):
            subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
        if found := shutil.which(PACKAGE):
            return found
    pytest.skip(f"no headless Chromium on this machine and it could not be installed: "
                f"'apt-get install {PACKAGE}' (Debian) enables this browser test")


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def check_page(page: Path, work: Path, screenshot: Path | None = None) -> dict:
    """Load ``page`` in headless Chromium; return ``errors``, ``images``, ``bad`` (images
    that did not decode) and ``text`` (the rendered DOM's text). With ``screenshot``, also
    write a 1200-pixel-wide PNG of the page there."""
    browser = chromium()
    html = page.read_text()
    probed = work / f"probe_{page.name}"
    probed.write_text(re.sub(r"<head>", "<head>\n" + PROBE, html, count=1))
    r = _run(browser, "--dump-dom", probed.resolve().as_uri())
    m = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the page did not finish loading in {browser}: {r.stderr[-500:]}"
    import html as h

    result = json.loads(h.unescape(m.group(1)))
    result["text"] = h.unescape(re.sub(r"<[^>]+>", " ", r.stdout))
    if screenshot is not None:
        _run(browser, f"--screenshot={screenshot.resolve()}", "--window-size=1200,1500",
             "--hide-scrollbars", page.resolve().as_uri())
        assert screenshot.is_file(), "no screenshot was written"
    return result
