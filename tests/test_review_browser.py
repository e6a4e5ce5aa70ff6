"""The review page in a real headless Chromium: click and type as a reviewer, then check the files.

Needs Debian's `chromium` (/usr/bin/chromium) and the python `playwright` package; browsers are never
downloaded (`playwright install` cannot work offline). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest

from editforge.sheet.workbook import open_workbook
from tests.helpers import Served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).with_name("artifacts")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
if not Path(CHROMIUM).is_file():
    pytest.skip("no Chromium: apt-get install -y chromium", allow_module_level=True)


@pytest.fixture
def page(tmp_path):
    with browser_on(Served(tmp_path)) as page:
        yield page


@contextlib.contextmanager
def browser_on(served: Served):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        page.served = served
        page.goto(served.server.url)
        try:
            yield page
        finally:
            browser.close()
            served.stop()


def wait_for_row(page, row: int) -> None:
    page.wait_for_function(f"document.getElementById('m-row').textContent === '{row}'", timeout=10_000)


def loaded_images(page) -> list[str]:
    """Alt texts of the images on screen that the browser decoded (naturalWidth > 0)."""
    page.wait_for_function("[...document.querySelectorAll('#images img')].every(i => i.complete)")
    return page.eval_on_selector_all("#images img", "imgs => imgs.filter(i => i.naturalWidth > 0).map(i => i.alt)")


def test_accept_reject_regenerate_in_the_browser(page):
    served = page.served
    book = dict(open_workbook(served.path).rows())
    wait_for_row(page, 2)
    assert page.inner_text("#position") == "1 / 5"
    assert page.inner_text("#n-pending") == "4" and page.inner_text("#n-queued") == "1"
    assert page.inner_text("#m-mode") == "gen_ref" and page.inner_text("#m-seed") == str(book[2]["gen_seed"])
    assert page.inner_text("#m-prompt") == "make a reference"
    assert "contrast" in page.inner_text("#m-quality")
    page.wait_for_function("document.getElementById('m-model').textContent === 'fake'")
    assert loaded_images(page) == [f"reference 1: {book[2]['ref_image_1']}", "sample (raw_image): img/r0.png"]
    assert page.get_attribute("#images figure.generated img", "alt").startswith("reference 1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-row.png"))

    page.keyboard.press("a")                       # accept row 2, on to row 3
    wait_for_row(page, 3)
    assert page.inner_text("#n-accepted") == "1"
    assert len(loaded_images(page)) == 3           # two references and the generated sample
    page.click("#reject")                          # reject row 3, on to row 4
    wait_for_row(page, 4)
    page.keyboard.press("g")                       # regenerate row 4's extra reference
    page.wait_for_function("document.getElementById('message').textContent.includes('rejected/')")
    assert "the next editforge synth makes a new one" in page.inner_text("#message")
    wait_for_row(page, 5)
    assert page.is_disabled("#regenerate")         # row 5 was paired by hand: nothing to regenerate

    page.keyboard.press("ArrowLeft")
    wait_for_row(page, 4)
    assert page.inner_text("#m-status") == "queued" and page.is_disabled("#accept")
    page.keyboard.press("ArrowRight")
    wait_for_row(page, 5)

    page.select_option("#filter-status", "accepted")
    wait_for_row(page, 2)
    assert page.inner_text("#position") == "1 / 1"
    page.select_option("#filter-status", "")
    page.select_option("#filter-mode", "gen_raw")
    wait_for_row(page, 3)
    assert page.inner_text("#m-status") == "rejected"
    page.select_option("#filter-mode", "")
    page.wait_for_function("document.getElementById('m-model').textContent === 'fake'")
    page.screenshot(path=str(ARTIFACTS / "review-after.png"))

    deadline = time.monotonic() + 15                # the server's writer thread saves the workbook
    while served.session.waiting_updates() and time.monotonic() < deadline:
        time.sleep(0.1)
    after = dict(open_workbook(served.path).rows())
    assert (after[2]["review"], after[3]["review"]) == ("accepted", "rejected")
    assert (after[4]["ref_image_2"], after[4]["need_gen"], after[4]["review"]) == (None, True, None)
    assert not (served.folder / book[4]["ref_image_2"]).exists()
    assert (served.folder / "rejected" / book[4]["ref_image_2"]).is_file()
    assert after[2]["ref_image_1"] == book[2]["ref_image_1"] and (served.folder / book[2]["ref_image_1"]).is_file()
    assert page.errors == []


def test_the_model_stays_on_screen_while_the_row_does(page, monkeypatch):
    """A refresh or a filter change redraws the row; the model line must not fall back to `…` each time
    (it did, and stayed so while the server was busy). Model lookups are slowed down here to make that visible."""
    import editforge.review.server as server

    wait_for_row(page, 2)
    page.wait_for_function("document.getElementById('m-model').textContent === 'fake'")
    slow = server.png_params
    monkeypatch.setattr(server, "png_params", lambda path: (time.sleep(2), slow(path))[1])
    page.select_option("#filter-status", "pending")   # the same row, redrawn
    wait_for_row(page, 2)
    page.select_option("#filter-status", "")
    time.sleep(0.3)
    assert page.inner_text("#m-model") == "fake"
    page.keyboard.press("ArrowRight")                 # another row: its model is looked up (slowly)
    wait_for_row(page, 3)
    assert page.inner_text("#m-model") == "…"
    page.wait_for_function("document.getElementById('m-model').textContent === 'fake'", timeout=10_000)
    assert page.errors == []


def test_export_button_writes_the_accepted_rows(page):
    wait_for_row(page, 2)
    page.keyboard.press("a")
    wait_for_row(page, 3)
    page.fill("#export-out", "for-training")
    page.select_option("#export-format", "diffsynth")
    page.click("#export")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('exported')")
    assert page.inner_text("#message").startswith("exported 1 accepted rows to ")
    assert (page.served.folder / "for-training").is_dir()
    assert page.errors == []


def test_typing_in_the_export_box_is_not_a_shortcut(page):
    wait_for_row(page, 2)
    page.fill("#export-out", "")
    page.type("#export-out", "agr")
    time.sleep(0.3)
    assert page.inner_text("#n-accepted") == "0" and page.served.session.waiting_updates() == 0


def test_the_page_holds_one_page_of_rows_and_walks_across_pages(tmp_path):
    """The browser never holds more than a page (2 rows here): moving past its end fetches the next one,
    filters are applied by the server, and an idle page polls only the small state, not the rows."""
    with browser_on(Served(tmp_path, page_size=2)) as page:
        fetched = []
        page.on("response", lambda r: fetched.append(r) if "/api/rows?" in r.url else None)
        wait_for_row(page, 2)
        assert page.inner_text("#position") == "1 / 5" and page.evaluate("page.rows.length") == 2
        for row, position in ((3, "2 / 5"), (4, "3 / 5"), (5, "4 / 5"), (6, "5 / 5")):
            page.keyboard.press("ArrowRight")
            wait_for_row(page, row)
            assert page.inner_text("#position") == position
        assert page.is_disabled("#next") and page.evaluate("page.offset") == 4
        for row in (5, 4, 3):
            page.keyboard.press("ArrowLeft")
            wait_for_row(page, row)
        assert page.evaluate("page.offset") == 2 - 2  # row 3 is on the first page again
        page.keyboard.press("a")                       # accept row 3: on to row 4, on the next page
        wait_for_row(page, 4)
        assert page.inner_text("#n-accepted") == "1" and page.inner_text("#position") == "3 / 5"
        page.select_option("#filter-status", "pending")
        page.wait_for_function("document.getElementById('position').textContent === '2 / 3'")
        assert page.inner_text("#m-row") == "4"  # rows 2, 4, 5 are pending
        page.select_option("#sort", "-row")
        page.wait_for_function("document.getElementById('position').textContent === '2 / 3'")
        page.keyboard.press("ArrowRight")
        wait_for_row(page, 2)
        assert all(len(r.json()["rows"]) <= 2 for r in fetched) and len(fetched) >= 6

        served = page.served                         # once the writer's saves are read, the page is idle
        deadline = time.monotonic() + 10
        while (served.session.waiting_updates() or served.session.source._reader is not None
               and served.session.source._reader.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        page.wait_for_timeout(2500)                  # (events reach Python while playwright waits, not in sleep)
        polled, rows_fetched = [], len(fetched)
        page.on("request", lambda r: polled.append(r.url) if "/api/state" in r.url else None)
        page.wait_for_timeout(4500)
        assert len(polled) >= 2 and len(fetched) == rows_fetched
        missing = ("nope.png", "status of 404")  # row 6's input is missing: shown as "file not found"
        assert [e for e in page.errors if not any(m in e for m in missing)] == []
