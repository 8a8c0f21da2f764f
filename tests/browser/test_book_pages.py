"""The built book as a reader sees it: every HTML page loaded in headless Chromium (file:// URLs, a 1280×900
window), after MathJax has typeset it.

For each page: no formula left as raw TeX (``\\(``, ``\\[``, ``$$``) in the visible text; nothing wider than the
content column (``article.bd-article``): neither the column itself scrolls sideways nor does any element inside
it reach past its edges; no console error (a SEVERE entry of the browser log). Across the book: every claim id
of the registry is the ``id`` of an element on some page, so ``page.html#band.kl_bounds`` reaches its card.

This runs after the book build (``.ci/test``), not in the main pytest run, which ignores ``tests/browser``. Without
a built book, or without Chromium and its driver (Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run``
installs) or selenium, the tests are skipped and the skip reason says which is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("FIBERLAB_BOOK_HTML", ROOT / "book" / "_build" / "html"))
#: the window (CSS pixels); FIBERLAB_BROWSER_WINDOW="800x900" measures another width
WINDOW = tuple(int(v) for v in os.environ.get("FIBERLAB_BROWSER_WINDOW", "1280x900").split("x"))
#: where each page's measurements are written (the summary test prints them)
REPORT = HTML.parent / f"browser-report-{WINDOW[0]}.json"
#: a layout rounding allowance (CSS pixels): sub-pixel borders and scrollbars can add a pixel
SLACK = 1.5
#: how long MathJax may take to typeset one page (the longest pages hold hundreds of formulas)
MATHJAX_TIMEOUT_S = 120

#: every page of the book; index.html only redirects to the first page (a meta refresh), and is left out
PAGES = sorted(p.name for p in HTML.glob("*.html") if 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8")) \
    if HTML.is_dir() else []


def _browser_paths() -> tuple[str | None, str | None]:
    chrome = os.environ.get("FIBERLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("FIBERLAB_CHROMEDRIVER") or shutil.which("chromedriver")
    return chrome, driver


def _skip_reason() -> str | None:
    if not PAGES:
        return f"book not built: no HTML pages under {HTML.relative_to(ROOT) if HTML.is_relative_to(ROOT) else HTML}" \
               " (run the book build first)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no browser: selenium is not installed (pip install -e '.[test]')"
    chrome, driver = _browser_paths()
    if not chrome or not driver:
        return ("no browser: " + " and ".join(n for n, p in (("chromium", chrome), ("chromedriver", driver)) if not p)
                + " not found (apt-get install chromium chromium-driver)")
    return None


SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

# Runs in the page after MathJax finished: the text a reader sees, the widths, every element sticking out of the
# column (tag, class, id, its left/right edges and width, the first words of its text).
MEASURE_JS = r"""
const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const outer = col.getBoundingClientRect(), pad = getComputedStyle(col);
// the column's content box: its text runs between the paddings
const box = {left: outer.left + parseFloat(pad.paddingLeft), right: outer.right - parseFloat(pad.paddingRight)};
box.width = box.right - box.left;
const slack = arguments[0];
const wide = [];
let widest = 0;
for (const el of col.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;              // not rendered (inside a closed <details>, hidden)
  const cs = getComputedStyle(el);
  if (cs.display === 'none' || cs.visibility === 'hidden') continue;
  if (el.closest('mjx-assistive-mml')) continue;                // MathJax's copy for screen readers, clipped to 1 px
  widest = Math.max(widest, r.right - box.left);
  if (wide.some(w => w.el.contains(el))) continue;             // inside one already reported: report the outermost
  if (r.right > box.right + slack || r.left < box.left - slack || el.scrollWidth > el.clientWidth + slack &&
      (cs.overflowX === 'auto' || cs.overflowX === 'scroll')) {
    wide.push({el: el, tag: el.tagName.toLowerCase(), cls: String(el.className).slice(0, 60), id: el.id,
               left: Math.round(r.left - box.left), right: Math.round(r.right - box.left),
               width: Math.round(r.width), scroll: el.scrollWidth, client: el.clientWidth,
               text: Array.from(el.innerText || '').slice(0, 60).join(''),     // whole code points
               tex: el.tagName === 'MJX-CONTAINER' && window.MathJax && MathJax.startup.document ?
                    (MathJax.startup.document.getMathItemsWithin(el)[0] || {}).math : undefined});
  }
}
return {column: Math.round(box.width), columnScroll: col.scrollWidth, columnClient: col.clientWidth,
        documentScroll: document.documentElement.scrollWidth, window: window.innerWidth,
        widest: Math.round(widest), wide: wide.slice(0, 20).map(({el, ...w}) => w), nwide: wide.length,
        text: col.innerText, ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        mathjax: !!window.MathJax, formulas: document.querySelectorAll('mjx-container').length};
"""

# Resolves when MathJax (if the page loads it) has typeset the page.
WAIT_MATHJAX_JS = r"""
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  const mj = window.MathJax;
  if (!document.querySelector('script[src*="mathjax"]')) return done('no mathjax');
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done('typeset'), e => done('error: ' + e));
    return;
  }
  if (Date.now() - start > 60000) return done('mathjax never started');
  setTimeout(poll, 50);
})();
"""


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, chromedriver = _browser_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(chromedriver), options=opts)
    drv.set_window_size(*WINDOW)
    drv.set_script_timeout(MATHJAX_TIMEOUT_S)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


_MEASURED: dict[str, dict] = {}


def measure(driver, page: str) -> dict:
    """Load ``page`` once, wait for MathJax, and return its measurements (cached per page)."""
    if page not in _MEASURED:
        driver.get((HTML / page).resolve().as_uri())
        state = driver.execute_async_script(WAIT_MATHJAX_JS)
        m = driver.execute_script(MEASURE_JS, SLACK)
        m["mathjax_state"] = state
        m["console"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        _MEASURED[page] = m
    return _MEASURED[page]


def raw_tex(text: str) -> list[str]:
    """Fragments of ``text`` that are TeX delimiters MathJax should have consumed."""
    out = []
    for delim in ("\\(", "\\[", "$$"):
        i = text.find(delim)
        if i >= 0:
            out.append(text[max(0, i - 40):i + 40].replace("\n", " "))
    return out


@pytest.mark.parametrize("page", PAGES or ["(none)"])
def test_formulas_are_typeset(driver, page):
    m = measure(driver, page)
    assert not m["mathjax_state"].startswith(("error", "mathjax never")), m["mathjax_state"]
    assert not raw_tex(m["text"]), f"{page}: raw TeX in the visible text: {raw_tex(m['text'])}"


@pytest.mark.parametrize("page", PAGES or ["(none)"])
def test_nothing_is_wider_than_the_column(driver, page):
    m = measure(driver, page)
    assert m["columnScroll"] <= m["columnClient"] + SLACK, f"{page}: the column scrolls sideways: {m['columnScroll']}" \
                                                             f" > {m['columnClient']}"
    assert m["documentScroll"] <= m["window"] + SLACK, f"{page}: the page scrolls sideways ({m['documentScroll']} px)"
    assert not m["wide"], f"{page}: {m['nwide']} element(s) past the {m['column']} px column: " + \
        json.dumps(m["wide"][:5])


@pytest.mark.parametrize("page", PAGES or ["(none)"])
def test_no_console_errors(driver, page):
    m = measure(driver, page)
    assert not m["console"], f"{page}: " + "; ".join(e["message"][:200] for e in m["console"])


def test_every_claim_id_is_an_anchor(driver):
    import fiberlab.claims  # noqa: F401  (registers every claim)
    from fiberlab.registry import all_claims

    ids: dict[str, str] = {}
    for page in PAGES:
        for i in measure(driver, page)["ids"]:
            ids.setdefault(i, page)
    missing = sorted(c.id for c in all_claims() if c.id not in ids)
    assert not missing, f"{len(missing)} claim id(s) with no element of that id on any page: {missing}"


def test_report(driver):
    """Writes every page's measurements (column width, widest element, formulas typeset, console errors) to
    ``browser-report-<width>.json`` beside the HTML and prints one line per page."""
    rows = {p: measure(driver, p) for p in PAGES}
    REPORT.write_text(json.dumps({p: {k: v for k, v in m.items() if k not in ("text", "ids")}
                                  for p, m in rows.items()}, indent=1, ensure_ascii=False), encoding="utf-8")
    lines = [f"{'page':24s} {'column':>6s} {'widest':>6s} {'past':>4s} {'formulas':>8s} {'errors':>6s}"]
    for p, m in rows.items():
        lines.append(f"{p:24s} {m['column']:6d} {m['widest']:6d} {m['nwide']:4d} {m['formulas']:8d} "
                     f"{len(m['console']):6d}")
    print("\nbook pages at " + "×".join(map(str, WINDOW)) + " px:\n" + "\n".join(lines))
