"""The service's web page in a real headless browser (Chromium, driven by selenium).

The page is served by the real app under uvicorn on loopback, over a real
service (the bundled tiny model, a development CA). The browser chooses a photo
through the page's file input, immunizes it, and shows original | immunized |
δ x 10 with a download link.

Chromium and its driver come from Debian (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them as root, as it does PostgreSQL).
Without them and without root, these tests are skipped, saying so.
"""

from __future__ import annotations

import shutil

import pytest

from photoimmune.sdk.io import save_image
from photoimmune.sdk.samples import sample_pixels
from photoimmune.service import Service, ServiceSettings, add_key, create_app

from .helpers import WAIT_S, LoopbackServer, service_world

SETTINGS = ServiceSettings(steps=3, max_sync_pixels=48 * 48)


def _browser_binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "no Chromium or chromedriver on PATH; install Debian's `chromium` and "
            "`chromium-driver` (.ci/run does, as root)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    binary, driver = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=DriverService(driver), options=options)
    chrome.set_page_load_timeout(WAIT_S)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    registry, keys = service_world()
    db = tmp_path_factory.mktemp("browser") / "service.db"
    service = Service.open(f"sqlite:///{db}", registry, keys, SETTINGS)
    server = LoopbackServer(create_app(service))
    server.start()
    yield server, add_key(service.store, "browser")
    server.stop()
    service.close()


def test_the_page_immunizes_a_chosen_photo_and_shows_it_side_by_side(browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    server, key = served
    photo = tmp_path / "photo.png"
    save_image(sample_pixels("chelsea.png", 40), photo)
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, WAIT_S)
    file_input = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[name=model]"))
    models = [m.get_attribute("value") for m in browser.find_elements(By.NAME, "model")]
    assert models == ["photoimmune/tiny-ldm"]
    browser.find_element(By.ID, "key").send_keys(key)
    file_input.send_keys(str(photo))
    wait.until(ready.element_to_be_clickable((By.ID, "go"))).click()
    wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "done"))
    assert browser.find_element(By.ID, "result").is_displayed()
    sizes = browser.execute_script(
        "return ['original', 'immunized', 'delta'].map("
        "id => [document.getElementById(id).width, document.getElementById(id).height])"
    )
    assert sizes == [[40, 40]] * 3
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download") == "immunized.png"


def test_the_page_says_what_is_wrong_with_a_bad_key(browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _key = served
    photo = tmp_path / "photo.png"
    save_image(sample_pixels("coffee.png", 32), photo)
    browser.get(server.url + "/")
    browser.find_element(By.ID, "key").send_keys("pik_not-a-key")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    browser.find_element(By.ID, "go").click()
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, WAIT_S).until(
        lambda _b: "error" in (status.get_attribute("class") or "")
    )
    assert "not one the service issued" in status.text
