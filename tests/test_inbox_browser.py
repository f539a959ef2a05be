"""The inbox page in a real headless browser (Chromium through selenium).

Skipped, with the reason, when selenium, chromium or chromedriver is
missing.  Screenshots go to $SMTPD_LITE_SCREENSHOTS when it is set, else to
the test's temporary folder.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from inboxes import CountingListener, running_inbox

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver")

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-proxy-server",
                  "--window-size=1280,800")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=%s" % (tmp_path / "chromium-profile"))
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path):
    folder = Path(os.environ.get("SMTPD_LITE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def inbox():
    with running_inbox() as running:
        yield running


def _open(browser, inbox):
    browser.get(inbox.url)
    # The event stream is open once the page has loaded its list.
    WebDriverWait(browser, 10).until(lambda driver: driver.find_element(By.ID, "total").text)
    time.sleep(0.3)


def _rows(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#list li")


def test_a_sent_message_appears_without_reload_within_a_second_and_opens(browser, inbox,
                                                                         screenshots):
    inbox.send(subject="Older message", text="an older one")
    _open(browser, inbox)
    assert [row.find_element(By.CLASS_NAME, "subject").text for row in _rows(browser)] \
        == ["Older message"]
    browser.execute_script("window.notReloaded = true")
    sent = time.monotonic()
    inbox.send(subject="Your order has shipped", text="Track it at https://example.com/track")
    WebDriverWait(browser, 1.0, poll_frequency=0.02).until(lambda driver: len(_rows(driver)) == 2)
    assert time.monotonic() - sent < 1.0
    assert browser.execute_script("return window.notReloaded") is True
    newest = _rows(browser)[0]
    assert newest.find_element(By.CLASS_NAME, "subject").text == "Your order has shipped"
    browser.save_screenshot(str(screenshots / "inbox-list.png"))
    newest.click()
    text = browser.find_element(By.ID, "text")
    WebDriverWait(browser, 5).until(lambda driver: "Track it at" in text.text)
    assert text.text == "Track it at https://example.com/track"
    assert browser.find_element(By.ID, "subject").text == "Your order has shipped"
    browser.save_screenshot(str(screenshots / "inbox-message.png"))


def test_keyboard_search_tabs_and_delete(browser, inbox):
    inbox.send(subject="Invoice 7", text="total 12 EUR")
    inbox.send(subject="Welcome aboard", text="hello")
    _open(browser, inbox)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "search"
    browser.switch_to.active_element.send_keys("invoice")
    WebDriverWait(browser, 5).until(lambda driver: len(_rows(driver)) == 1)
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    body.send_keys("j")
    body.send_keys(Keys.ENTER)
    WebDriverWait(browser, 5).until(
        lambda driver: driver.find_element(By.ID, "text").text == "total 12 EUR")
    body.send_keys("3")
    headers = browser.find_element(By.ID, "headers")
    WebDriverWait(browser, 5).until(lambda driver: "Invoice 7" in headers.text)
    body.send_keys("4")
    source = browser.find_element(By.ID, "source")
    WebDriverWait(browser, 5).until(lambda driver: "Subject: Invoice 7" in source.text)
    body.send_keys(Keys.DELETE)
    WebDriverWait(browser, 5).until(lambda driver: len(_rows(driver)) == 0)
    assert inbox.json("/api/v1/messages")["total"] == 1


def test_malicious_html_runs_nothing_and_loads_nothing(browser, inbox, screenshots):
    listener = CountingListener()
    try:
        url = listener.url
        html = (
            "<html><head>"
            '<meta http-equiv="refresh" content="0;url=%(url)s/refresh">'
            '<link rel="stylesheet" href="%(url)s/style.css">'
            '<base href="%(url)s/base/">'
            "<style>body { background: url(%(url)s/background.png) }</style>"
            "</head><body onload=\"top.document.body.dataset.pwned='onload'\">"
            "<h1>Act now</h1>"
            '<img src="%(url)s/tracker.png" alt="tracker">'
            "<script>top.document.body.dataset.pwned = 'script';"
            "new Image().src = '%(url)s/script';</script>"
            '<img src="x" onerror="top.document.body.dataset.pwned=\'onerror\'">'
            '<iframe src="%(url)s/frame"></iframe>'
            '<form id="f" action="%(url)s/form" method="post"><input name="q" value="1">'
            '<input type="submit" value="Send"></form>'
            "<script>document.getElementById('f').submit()</script>"
            '<video poster="%(url)s/poster.png"></video>'
            '<object data="%(url)s/object"></object>'
            "</body></html>" % {"url": url})
        inbox.send(subject="Phishing", text="see the HTML part", html=html)
        _open(browser, inbox)
        _rows(browser)[0].click()
        WebDriverWait(browser, 5).until(
            lambda driver: driver.find_element(By.ID, "text").text == "see the HTML part")
        browser.find_element(By.CSS_SELECTOR, "[data-tab=html]").click()
        frame = browser.find_element(By.ID, "html")
        WebDriverWait(browser, 5).until(lambda driver: frame.get_attribute("src"))
        time.sleep(1.5)
        browser.switch_to.frame(frame)
        assert browser.find_element(By.TAG_NAME, "h1").text == "Act now"
        # The form is there, but submitting it goes nowhere either.
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        browser.switch_to.default_content()
        time.sleep(1.0)
        assert listener.paths == []
        assert browser.execute_script("return document.body.dataset.pwned") is None
        assert browser.current_url == inbox.url
        browser.save_screenshot(str(screenshots / "inbox-html-blocked.png"))
        # The listener does count what a browser loads: at the user's click, the
        # remote images of this one message are shown (and nothing else runs).
        browser.find_element(By.ID, "remote").click()
        WebDriverWait(browser, 5).until(lambda driver: "/tracker.png" in listener.paths)
        time.sleep(0.5)
        assert "/script" not in listener.paths and "/form" not in listener.paths
        assert "/refresh" not in listener.paths
        assert browser.execute_script("return document.body.dataset.pwned") is None
    finally:
        listener.close()
