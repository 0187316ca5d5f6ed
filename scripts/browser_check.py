#!/usr/bin/env python3
"""Open every page of the built book in a real browser and report what a reader would see broken.

    python scripts/browser_check.py _build/test-book/_build/html [--screenshots _build/browser]

The HTML is served from a localhost http.server thread (pages opened as
file:// URLs behave differently: no fetch, other security rules) and opened
in headless Debian chromium through Selenium and /usr/bin/chromedriver, at a
1280 px wide window. For each page it checks:

- error outputs: notebook cells with stderr or error outputs, or traceback
  text ("Traceback (most recent call last)") anywhere on the page;
- images that did not load (``naturalWidth == 0``), and figures shown so
  much smaller than drawn that their text is too small to read (below
  ``MIN_FIGURE_SCALE`` of their pixel width: a wide multi-panel figure
  squeezed into the text column);
- math: MathJax not loaded on a page with math, math left untypeset (raw
  ``\\(``, ``\\[`` or ``$$`` in the text), or MathJax's own error boxes;
- width: the page wider than the window (``scrollWidth > clientWidth`` of the
  document), and elements whose content is wider than their own box (a text
  table or an equation that only fits with a scroll bar, or is clipped);
- resources fetched from anywhere but the local server (the book must work
  offline) and severe console errors.

It prints one line per finding, ``PAGE: KIND: DETAIL``, saves a screenshot of
each page under the screenshot folder, and exits 1 if there was any problem
(2 if the browser could not be started). Two kinds are only warnings, marked
``warning:`` and not failing the check: long lines in code cells (the code's
style, not a rendering fault) and browser console errors.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage"]
# Folders of a Sphinx build that hold assets, not pages.
NOT_PAGES = {"_static", "_sources", "_images", "_downloads"}
# Console messages that a fresh browser profile always gets from the theme.
BENIGN_CONSOLE = ("favicon.ico", "Got invalid theme mode")
# Full-page screenshots of very long pages are capped (Chrome's limit is 16384 px).
MAX_SCREENSHOT_HEIGHT = 16000
# The smallest share of its own pixel width a figure may be shown at (see PAGE_CHECKS_JS).
MIN_FIGURE_SCALE = 0.7

# Runs in the page once it has loaded (and MathJax has finished); returns a
# list of [kind, detail]. Kept in one script so a page costs one round trip.
PAGE_CHECKS_JS = r"""
const MIN_FIGURE_SCALE = %MIN_FIGURE_SCALE%;
const problems = [];
// Cut by code points: MathJax's text holds astral characters (math italic), and a
// cut surrogate pair is a string the driver cannot hand back.
const short = (s, n = 70) => { s = (s || '').replace(/\s+/g, ' ').trim(); const a = Array.from(s); return a.length > n ? a.slice(0, n).join('') + '…' : s; };
const describe = (el) => {
  let d = el.tagName.toLowerCase();
  if (el.id) d += '#' + el.id;
  if (el.classList.length) d += '.' + [...el.classList].slice(0, 3).join('.');
  const cell = el.closest('.cell');
  if (cell) {
    const cells = [...document.querySelectorAll('.cell')];
    d += ' (cell ' + (cells.indexOf(cell) + 1) + ' of ' + cells.length + ')';
  }
  const section = el.closest('section');
  const h = section && section.querySelector('h1, h2, h3');
  if (h) d += ' under "' + short(h.textContent.replace('#', ''), 40) + '"';
  return d;
};
const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
const main = document.querySelector('main') || document.body;

// 1. error outputs
for (const el of document.querySelectorAll('.output.stderr, .output.error, .output.traceback, .cell_output .stderr')) {
  problems.push(['error output', describe(el) + ': ' + short(el.textContent)]);
}
if (main.innerText.includes('Traceback (most recent call last)')) {
  problems.push(['error output', 'traceback text on the page']);
}

// 2. images
for (const img of document.images) {
  if (!img.complete || img.naturalWidth === 0) {
    problems.push(['image not loaded', img.getAttribute('src') + ' in ' + describe(img)]);
  }
}

// A figure output scaled down to fit the text column shrinks its text with it: matplotlib's
// 10 pt labels at 100 dpi are 14 px, and below MIN_FIGURE_SCALE of that they are too small to read.
for (const img of main.querySelectorAll('.cell_output img')) {
  if (!img.complete || img.naturalWidth === 0 || !visible(img)) continue;
  // a retina figure carries the width it is meant to be shown at (half its pixels): myst-nb
  // writes it as a style in px, HTML as a width attribute
  const styled = img.style.width.endsWith('px') ? parseFloat(img.style.width) : NaN;
  const meant = styled || parseFloat(img.getAttribute('width')) || img.naturalWidth;
  const scale = img.getBoundingClientRect().width / meant;
  if (scale < MIN_FIGURE_SCALE) {
    problems.push(['small figure', describe(img) + ': ' + meant + ' px wide, shown at ' +
                   Math.round(100 * scale) + '% (its 10 pt text at ' + (10 * scale).toFixed(1) + ' pt): ' +
                   'fewer panels a row, or a narrower figure']);
  }
}

// 3. math
const mathNodes = document.querySelectorAll('.math');
const typeset = document.querySelectorAll('mjx-container').length;
const mathjaxLoaded = !!(window.MathJax && window.MathJax.startup && window.MathJax.version);
if (mathNodes.length && !mathjaxLoaded) {
  problems.push(['math', 'MathJax not loaded; ' + mathNodes.length + ' math elements left as TeX']);
}
for (const el of mathNodes) {
  if (!el.querySelector('mjx-container') && /\\\(|\\\[|\$\$/.test(el.textContent)) {
    problems.push(['math', 'untypeset: ' + short(el.textContent) + ' in ' + describe(el)]);
  }
}
for (const el of document.querySelectorAll('mjx-merror, [data-mjx-error]')) {
  problems.push(['math', 'MathJax error "' + short(el.getAttribute('data-mjx-error') || el.textContent) + '" in ' + describe(el)]);
}
// raw TeX delimiters left in ordinary text (not in code, not inside math)
const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const p = n.parentElement;
  if (!p || p.closest('pre, code, script, style, .math, mjx-container, textarea')) continue;
  if (/\$\$|\\\(|\\\[|\\begin\{/.test(n.nodeValue) && visible(p)) {
    problems.push(['math', 'raw TeX in text: "' + short(n.nodeValue) + '" in ' + describe(p)]);
  }
}

// 4. width
const doc = document.documentElement;
if (doc.scrollWidth > doc.clientWidth + 1) {
  problems.push(['too wide', 'page is ' + doc.scrollWidth + ' px wide in a ' + doc.clientWidth + ' px window']);
  // the outermost elements that stick out to the right
  const culprits = [];
  for (const el of main.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > doc.clientWidth + 1 && !culprits.some(c => c.contains(el))) culprits.push(el);
  }
  for (const el of culprits.slice(0, 5)) {
    problems.push(['too wide', describe(el) + ' reaches ' + Math.round(el.getBoundingClientRect().right) + ' px: ' + short(el.textContent, 50)]);
  }
}
// content wider than its own box: scrolls sideways, or is clipped
const reported = [];
// (block-level things only: inline math reports a few px of italic overhang)
for (const el of main.querySelectorAll('pre, table, div.math, mjx-container[display="true"], .output, .cell_output, div.highlight, figure, img')) {
  if (!visible(el) || el.clientWidth === 0 || reported.some(r => r.contains(el) || el.contains(r))) continue;
  if (el.scrollWidth > el.clientWidth + 2) {
    const ox = getComputedStyle(el).overflowX;
    if (ox === 'visible') continue;  // spills over instead; the page-width check above catches it
    reported.push(el);
    // Long lines of code are the code's style, not a rendering fault: a warning.
    const code = !!el.closest('.cell_input, div.highlight') && !el.closest('.cell_output');
    problems.push([code ? 'wide code' : 'too wide', describe(el) + ': content ' + el.scrollWidth + ' px in a ' +
                   el.clientWidth + ' px box (' + (ox === 'hidden' || ox === 'clip' ? 'clipped' : 'scrolls sideways') +
                   '): ' + short(el.innerText, 50), code ? 'warning' : 'problem']);
  }
}

// 5. resources from anywhere but this server
for (const e of performance.getEntriesByType('resource')) {
  if (new URL(e.name).origin !== location.origin) problems.push(['external resource', e.name]);
}
return problems;
"""

WAIT_FOR_MATHJAX_JS = r"""
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!mj || !mj.startup || !mj.startup.promise) { done('no mathjax'); return; }
mj.startup.promise.then(() => done('ok'), (e) => done('error: ' + e));
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would drown the report
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(folder: Path) -> list[Path]:
    """Every HTML page of the build, without asset folders and redirect stubs."""
    found = []
    for path in sorted(folder.rglob("*.html")):
        rel = path.relative_to(folder)
        if rel.parts[0] in NOT_PAGES:
            continue
        if 'http-equiv="refresh"' in path.read_text(errors="replace")[:2000].lower():
            continue  # Jupyter Book's index.html, a redirect to the root page
        found.append(rel)
    return found


def start_browser(width: int, height: int, profile_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def screenshot(driver, path: Path, width: int) -> None:
    import base64

    height = driver.execute_script("return document.documentElement.scrollHeight")
    height = min(int(height), MAX_SCREENSHOT_HEIGHT)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(driver, url: str) -> list[tuple[str, str, str]]:
    """(kind, detail, severity) of everything found on the page at ``url``;
    severity is "problem" (fails the check) or "warning" (reported only)."""
    driver.get(url)
    mathjax = driver.execute_async_script(WAIT_FOR_MATHJAX_JS)
    found = [(p[0], p[1], p[2] if len(p) > 2 else "problem") for p in driver.execute_script(
        PAGE_CHECKS_JS.replace("%MIN_FIGURE_SCALE%", str(MIN_FIGURE_SCALE)))]
    if mathjax.startswith("error"):
        found.append(("math", f"MathJax failed: {mathjax}", "problem"))
    # Console errors are reported but do not fail the check: the theme logs
    # some on every page (sphinx-thebe's script is included twice by Jupyter Book 1).
    for entry in driver.get_log("browser"):
        if not any(noise in entry["message"] for noise in BENIGN_CONSOLE):
            found.append(("console", entry["message"][:200], "warning"))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, nargs="?", default=Path("_build/html"),
                        help="the built book's HTML folder (default: _build/html)")
    parser.add_argument("--screenshots", type=Path, default=Path("_build/browser"),
                        help="folder for one PNG per page (default: _build/browser)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)

    if not (args.html / "_static").is_dir():
        print(f"browser_check: {args.html} is not a built Sphinx HTML folder (no _static/)", file=sys.stderr)
        return 2
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            print(f"browser_check: {tool} not found; install Debian's chromium and chromium-driver", file=sys.stderr)
            return 2
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go online for a driver

    server, base = serve(args.html)
    profile_dir = tempfile.mkdtemp(prefix="browser-check-profile-")
    n_problems = n_warnings = 0
    try:
        try:
            driver = start_browser(args.width, args.height, profile_dir)
        except Exception as err:  # the message is the useful part, the traceback is selenium's
            print(f"browser_check: could not start chromium: {str(err).splitlines()[0]}", file=sys.stderr)
            return 2
        try:
            todo = pages(args.html)
            for rel in todo:
                problems = check_page(driver, base + rel.as_posix())
                screenshot(driver, args.screenshots / (rel.with_suffix("").as_posix().replace("/", "__") + ".png"),
                           args.width)
                for kind, detail, severity in problems:
                    prefix = "" if severity == "problem" else "warning: "
                    print(f"{rel.as_posix()}: {prefix}{kind}: {detail}")
                n_problems += sum(severity == "problem" for _, _, severity in problems)
                n_warnings += sum(severity != "problem" for _, _, severity in problems)
        finally:
            driver.quit()
    finally:
        server.shutdown()
        shutil.rmtree(profile_dir, ignore_errors=True)
    print(f"browser_check: {len(todo)} pages, {n_problems} problem(s), {n_warnings} warning(s); screenshots in {args.screenshots}",
          file=sys.stderr)
    return 1 if n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
