"""Screenshot the search page of a running ``keras-dml serve`` after one query,
in headless Chromium (Debian ``chromium`` + ``chromium-driver``, selenium).

    keras-dml serve --model=runs/own/saved_model --index=runs/gallery_index &
    python scripts/serve_page_screenshot.py --image=query.png --out=docs/serve_page.png

Opens the page, sets k, chooses the image in the file input (as a user
would), waits until the k result thumbnails have loaded, prints the
results as the page shows them and saves a PNG of the window.
"""

import argparse
import shutil
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/")
    p.add_argument("--image", required=True, help="The query image file.")
    p.add_argument("--out", required=True, help="PNG to write.")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--size", default="1200,820", help="Window width,height in pixels.")
    args = p.parse_args(argv)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={args.size}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)
    try:
        driver.get(args.url)
        box = driver.find_element(By.ID, "k")
        box.clear()
        box.send_keys(str(args.k))
        driver.find_element(By.ID, "file").send_keys(args.image)
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('#results img'))"
            ".filter(i => i.complete && i.naturalWidth > 0).length;") == args.k)
        print(driver.find_element(By.ID, "status").text)
        verdict = driver.find_element(By.ID, "verdict").text
        if verdict:
            print(verdict)
        for card in driver.find_elements(By.CSS_SELECTOR, "#results .result"):
            print("  " + card.text.replace("\n", " | "))
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
