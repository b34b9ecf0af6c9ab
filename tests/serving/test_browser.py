"""The search page in a real headless Chromium (Debian `chromium` +
`chromium-driver`, driven by selenium): open /, choose an image, find the k
result thumbnails loaded, with class names and scores."""

import os
import shutil

import pytest

import serving_tools as st
from references import unavailable

pytest.importorskip("starlette", reason="the [serve] extra is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser(width=1280, height=900):
    """A headless Chromium session (or a skip naming what is missing; a
    failure under CI=true)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        unavailable(f"selenium is missing ({e}); scripts/setup.sh installs it.")
    if not CHROMIUM or not DRIVER:
        unavailable("headless Chromium is missing (Debian packages chromium and "
                    "chromium-driver; scripts/setup.sh installs them).")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, index, gallery = st.make_pair(str(tmp_path_factory.mktemp("browser")))
    with st.running_server(model, index, "--threshold=0.99999", "--k=6") as url:
        yield url, gallery


def test_page_searches_and_shows_k_thumbnails(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    url, gallery = served
    query = os.path.join(gallery, "blue", "03.png")
    driver = browser()
    try:
        driver.get(url + "/")
        assert driver.title == "keras_dml search"
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("5")
        driver.find_element(By.ID, "file").send_keys(query)

        def loaded(d):
            cards = d.find_elements(By.CSS_SELECTOR, "#results .result")
            done = d.execute_script(
                "return Array.from(document.querySelectorAll('#results img'))"
                ".filter(i => i.complete && i.naturalWidth > 0).length;")
            return len(cards) == 5 and done == 5
        WebDriverWait(driver, 60).until(loaded)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        names = [c.find_element(By.CLASS_NAME, "name").text for c in cards]
        metas = [c.find_element(By.CLASS_NAME, "meta").text for c in cards]
        assert names[0] == "blue"                           # the query finds itself
        assert all(n in st.CLASSES for n in names)
        assert all(m.startswith("score ") for m in metas)
        assert "match" in metas[0] and "no match" not in metas[0]
        assert driver.find_element(By.ID, "verdict").text.startswith("Match: blue")
        assert "5 nearest of 20" in driver.find_element(By.ID, "status").text
        # The thumbnails are the gallery's images, served by id.
        sources = driver.execute_script(
            "return Array.from(document.querySelectorAll('#results img')).map(i => i.src);")
        assert all("/thumbnail/" in s for s in sources)
        shot = str(tmp_path / "page.png")
        assert driver.save_screenshot(shot) and os.path.getsize(shot) > 10_000
    finally:
        driver.quit()
