"""The web console in a real browser (headless Chromium) against the real service:
every page loads with no console error and no failed request, the user page lists the
feed the API answers, a rollback from the models page changes the live version, a read
key cannot activate, and with keys configured no page shows data without one."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import build_trained_home, clone_version
from tests.api.test_console import CLONE, make_reports
from tests.browser.browser import chromium, console_errors, find_chromium
from tests.reliability.service import (
    READ_KEY,
    WRITE_KEY,
    Service,
    bearer,
    start_service,
    stop_service,
)

pytestmark = pytest.mark.slow

if find_chromium() is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI must run the console's browser tests: apt-get install chromium chromium-driver"
        )
    pytest.skip(
        "no system Chromium (apt-get install chromium chromium-driver)", allow_module_level=True
    )


class Console:
    """The running service and what the tests need to know about its world."""

    def __init__(self, service: Service, home: Path, reports: list[str]) -> None:
        self.service = service
        self.home = home
        self.reports = reports
        with httpx.Client(base_url=service.base, headers=bearer(READ_KEY), timeout=30) as api:
            self.user = "demo-user-0003"
            feed = api.get(f"/v1/users/{self.user}/feed").json()
            self.live = feed["model_version"]
            self.item = feed["items"][0]["item_id"]

    def url(self, path: str) -> str:
        return self.service.base + path

    def pages(self) -> dict[str, str]:
        return {
            "overview": "/ui",
            "user": f"/ui/users/{self.user}",
            "item": f"/ui/items/{urllib.parse.quote(self.item, safe='')}",
            "models": "/ui/models",
            "experiments": "/ui/experiments",
            "reports": f"/ui/reports?a={self.reports[0]}&b={self.reports[1]}",
            "report": f"/ui/reports/{self.reports[1]}/",
            "find-user": "/ui/users",
        }


def build_console_home(home: Path) -> list[str]:
    """A trained demo world, a second complete version and two evaluation reports."""
    build_trained_home(home)
    live = (home / "vectors" / "CURRENT").read_text().strip()
    clone_version(home, live, CLONE)
    import pandas as pd

    from recsys.config import Settings
    from recsys.store import open_store
    from recsys.store.catalog import load_items

    store = open_store(Settings(home=home, _env_file=None))  # type: ignore[call-arg]
    try:
        with store.read() as conn:
            items = load_items(conn)["item_id"].tolist()
            users = pd.read_sql("SELECT user_id FROM users ORDER BY user_id", conn)["user_id"]
    finally:
        store.dispose()
    return make_reports(home / "reports", users.tolist(), items)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    reports = build_console_home(home)
    service = start_service(home, root / "run", env={"RECSYS_REPORTS_DIR": str(home / "reports")})
    try:
        yield Console(service, home, reports)
    finally:
        stop_service(service)


@pytest.fixture()
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def sign_in(driver: Any, console: Console, key: str, then: str = "/ui") -> None:
    from selenium.webdriver.common.by import By

    driver.get(console.url(f"/ui/login?next={urllib.parse.quote(then, safe='')}"))
    driver.find_element(By.NAME, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    wait_for(lambda: urllib.parse.urlparse(driver.current_url).path == then.split("?")[0])


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.05)


def test_every_page_loads_without_a_console_error(
    browser: Any, console: Console, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, console, READ_KEY)
    assert console_errors(browser) == []
    for name, path in console.pages().items():
        browser.get(console.url(path))
        assert browser.execute_script("return document.readyState") == "complete"
        heading = browser.find_element(By.TAG_NAME, "h1").text
        assert heading, name
        assert console_errors(browser) == [], (name, path)
        browser.save_screenshot(str(tmp_path / f"{name}.png"))
    # The console's own stylesheet applied (no failed or blocked asset).
    browser.get(console.url("/ui"))
    color = browser.find_element(By.CSS_SELECTOR, "header").value_of_css_property(
        "background-color"
    )
    assert color in ("rgba(255, 255, 255, 1)", "rgb(255, 255, 255)")


def test_the_user_page_lists_the_feed_the_api_answers(browser: Any, console: Console) -> None:
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=console.service.base, headers=bearer(READ_KEY)) as api:
        for user in ("demo-user-0001", "demo-user-0042", "demo-user-0150"):
            expected = [i["item_id"] for i in api.get(f"/v1/users/{user}/feed").json()["items"]]
            sign_in(browser, console, READ_KEY, then=f"/ui/users/{user}")
            rows = browser.find_elements(By.CSS_SELECTOR, "#feed tr[data-item-id]")
            assert [r.get_attribute("data-item-id") for r in rows] == expected, user
    # The search box finds a user.
    box = browser.find_element(By.CSS_SELECTOR, "header input[name='user_id']")
    box.send_keys("demo-user-0007\n")
    wait_for(lambda: browser.current_url.endswith("/ui/users/demo-user-0007"))
    assert "demo-user-0007" in browser.find_element(By.TAG_NAME, "h1").text


def test_a_rollback_from_the_models_page_changes_the_live_version(
    browser: Any, console: Console
) -> None:
    from selenium.webdriver.common.by import By

    def live_over_api() -> str:
        with httpx.Client(base_url=console.service.base, headers=bearer(READ_KEY)) as api:
            return str(api.get(f"/v1/users/{console.user}/feed").json()["model_version"])

    sign_in(browser, console, WRITE_KEY, then="/ui/models")
    for target in (CLONE, console.live):
        browser.find_element(By.CSS_SELECTOR, f"tr[data-version='{target}'] button").click()
        alert = browser.switch_to.alert
        assert target in alert.text
        alert.accept()
        wait_for(lambda: "done=" in browser.current_url)
        assert browser.find_element(By.ID, "live").text == target
        assert live_over_api() == target
    # Dismissing the confirmation changes nothing.
    browser.find_element(By.CSS_SELECTOR, f"tr[data-version='{CLONE}'] button").click()
    browser.switch_to.alert.dismiss()
    time.sleep(0.5)
    assert live_over_api() == console.live


def test_a_read_key_cannot_activate(browser: Any, console: Console) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, console, READ_KEY, then="/ui/models")
    assert browser.find_elements(By.CSS_SELECTOR, "#versions button") == []
    assert "needs a write key" in browser.page_source
    # A hand-made form with a valid token still meets the scope check on the server.
    browser.execute_script(
        """
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/ui/models/' + arguments[0] + '/activate';
        const token = document.querySelector("input[name='csrf']").cloneNode();
        form.appendChild(token);
        document.body.appendChild(form);
        form.submit();
        """,
        CLONE,
    )
    wait_for(lambda: "/activate" in browser.current_url)
    assert "read scope" in browser.find_element(By.CSS_SELECTOR, ".error").text
    with httpx.Client(base_url=console.service.base, headers=bearer(READ_KEY)) as api:
        assert api.get(f"/v1/users/{console.user}/feed").json()["model_version"] == console.live


def test_no_page_shows_data_without_a_key(browser: Any, console: Console) -> None:
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=console.service.base, headers=bearer(READ_KEY)) as api:
        similar = api.get(f"/v1/items/{console.item}/similar").json()["items"]
        feed = api.get(f"/v1/users/{console.user}/feed").json()["items"]
    # What a page would show: the user's feed, the item's neighbours, the live version.
    # (The requested path itself comes back in the form's "next" field.)
    secrets_of_the_pages = [*(i["item_id"] for i in feed[1:]), similar[0]["item_id"], console.live]
    for name, path in console.pages().items():
        browser.delete_all_cookies()
        browser.get(console.url(path))
        assert urllib.parse.urlparse(browser.current_url).path == "/ui/login", name
        assert browser.find_element(By.NAME, "key")
        source = browser.page_source
        shown = [value for value in secrets_of_the_pages if value in source]
        assert shown == [], (name, shown)
    # A wrong key is refused on the form.
    browser.find_element(By.NAME, "key").send_keys("not-a-key\n")
    wait_for(lambda: bool(browser.find_elements(By.CSS_SELECTOR, ".error")))
    assert "Unknown key" in browser.find_element(By.CSS_SELECTOR, ".error").text
