"""The dashboard in a real browser (Debian's chromium, headless, driven by Selenium through the system
chromedriver) during a small demo: the page logs in as the demo's read-only viewer, its numbers equal
the report views, every chart is drawn (pixels on each canvas), and screenshots are saved under
$CARRIERPAY_TEST_ARTIFACTS (default: the temporary directory)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.e2e.as_a_user import read_until, run_carrierpay, start_carrierpay

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver missing "
                                                                         "(.ci/run installs them)")

# Non-transparent pixels of a canvas: a chart that was drawn has many, an empty canvas none.
PAINTED = """
const c = document.querySelector(arguments[0] + ' canvas');
if (!c) return -1;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
return n;
"""


def _browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,2200"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _artifacts() -> Path:
    where = Path(os.environ.get("CARRIERPAY_TEST_ARTIFACTS") or tempfile.gettempdir()) / "carrierpay-dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_the_dashboard_shows_the_report_numbers_and_draws_its_charts():
    home = Path(tempfile.mkdtemp(prefix="carrierpay-dash-", dir="/tmp"))
    os.chmod(home, 0o755)
    demo = start_carrierpay(home, "demo", "--subscribers", "200", "--days", "1", "--keep", "--dashboard-port", "0",
                            home=home)
    browser = None
    try:
        seen = read_until(demo, "dashboard: http://", 240)
        found = re.search(r"dashboard: (http://\S+/) \(log in as (\S+), password (\S+)\)", seen[-1])
        assert found, "".join(seen)[-3000:]
        address, login, password = found.groups()
        browser = _browser()
        browser.execute_cdp_cmd("Network.enable", {})
        token = base64.b64encode(f"{login}:{password}".encode()).decode()
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})

        # While the demo runs: the page loads and updates itself.
        browser.get(address)
        deadline = time.monotonic() + 60
        while not browser.execute_script("return document.body.dataset.loaded") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert browser.execute_script("return document.body.dataset.loaded"), browser.page_source[-2000:]
        browser.save_screenshot(str(_artifacts() / "during-the-demo.png"))

        seen += read_until(demo, "keep running until you press Ctrl-C", 300)
        assert any("keep running until you press Ctrl-C" in line for line in seen), "".join(seen)[-3000:]
        url = run_carrierpay(home, "db", "url", "--database", "carrierpay_demo", home=home).stdout.strip()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select sched.fold_rollups()")  # what the demo's scheduler tick also does each second
            now = conn.execute("select now from report.business_time").fetchone()[0]
            expected = {row[0]: [int(v) for v in row[1:]] for row in conn.execute(
                "select carrier, sum(attempts), sum(succeeded), sum(renewals), sum(retries), sum(step_downs) "
                "from report.hourly_success where hour >= %s and hour < %s group by carrier",
                [now - timedelta(days=7), now]).fetchall()}
            breakers = dict(conn.execute("select carrier, state from report.carrier_breakers").fetchall())
        assert expected and sum(v[0] for v in expected.values()) > 0

        browser.find_element("css selector", "button[data-range='7d']").click()
        shown = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(2.5)  # the page refreshes every 2 s in the demo
            shown = browser.execute_script("""
                const out = {};
                for (const tr of document.querySelectorAll('#totals tbody tr')) {
                  out[tr.dataset.carrier] = ['attempts', 'succeeded', 'renewals', 'retries', 'step_downs']
                    .map(f => Number(tr.querySelector(`[data-field="${f}"]`).textContent));
                }
                return out;""")
            if shown == expected:
                break
        assert shown == expected, browser.find_element("id", "status").text
        shown_breakers = browser.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll('#carriers tbody tr'))
              out[tr.dataset.carrier] = tr.querySelector('[data-field="breaker_state"]').textContent;
            return out;""")
        assert shown_breakers == breakers
        for chart in ("#chart-success", "#chart-attempts", "#chart-revenue", "#chart-renewals"):
            assert browser.execute_script(PAINTED, chart) > 500, chart
        assert browser.find_elements("css selector", "#heat td[data-hour]")
        browser.save_screenshot(str(_artifacts() / "after-the-demo-7-days.png"))

        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=90)
    finally:
        if browser is not None:
            browser.quit()
        if demo.poll() is None:
            demo.kill()
        run_carrierpay(home, "db", "down", home=home)
        shutil.rmtree(home, ignore_errors=True)
