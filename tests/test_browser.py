"""The real app in headless Chromium: `streamlit run app.py`; every page opened by deep link on a freshly
started server shows one menu with Home first; on Diagnose, upload an image and wait for the heatmap.

Skips, saying why, only where Chromium or chromedriver is not installed (`.ci/run` installs
Debian's chromium and chromium-driver). The screenshot is saved under the test's tmp path.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

RESULT_TIMEOUT = 240


def _lesion_file(tmp_path: Path) -> Path:
    """A 600x450 JPEG: a real HAM10000 image scaled to the camera's size, or a synthetic lesion."""
    from tests.conftest import HAM_DIR
    from tests.test_quality import lesion_like

    real = HAM_DIR / "images" / "ISIC_0024306.jpg"
    img = Image.open(real).convert("RGB") if real.is_file() else Image.fromarray(lesion_like(np.random.default_rng(0)))
    path = tmp_path / "lesion.jpg"
    img.resize((600, 450), Image.BICUBIC).save(path, quality=92)
    return path


def test_diagnose_page_in_chromium(live_url, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{live_url}/Diagnose")
    wait = WebDriverWait(driver, RESULT_TIMEOUT)
    file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
    file_input.send_keys(str(_lesion_file(tmp_path)))

    # The heatmap's three panels (plus the image as uploaded), and the report button.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid='stImage']")) >= 4)
    wait.until(lambda d: "Download the PDF report" in d.find_element(By.TAG_NAME, "body").text)
    loaded = "return [...document.querySelectorAll(\"[data-testid='stImage'] img\")].filter(i => i.complete && i.naturalWidth > 0).length"
    wait.until(lambda d: d.execute_script(loaded) >= 4)
    time.sleep(2)  # let the plotly chart finish drawing before the screenshot
    body = driver.find_element(By.TAG_NAME, "body").text
    shot = tmp_path / "diagnose.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert "Traceback" not in body and not driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
    for text in ("Referral decision", "Suggested class", "Malignant risk", "Melanoma risk", "Overlay",
                 "Class probabilities", "Colour scale"):
        assert text in body or driver.find_elements(By.XPATH, f"//*[contains(text(), '{text}')]"), text


#: Each page's deep link (the URL path app.py gives it) and its title on the page.
DEEP_LINKS = {"": "Dermoscopy decision support", "Diagnose": "Diagnose", "Dataset_Explorer": "Dataset explorer",
              "Explanations": "Explanations", "Model_Performance": "Model performance",
              "Validate": "Validate on your own images"}
MENU = ["Home", "Diagnose", "Dataset explorer", "Explanations", "Model performance", "Validate"]


@pytest.mark.parametrize("path", list(DEEP_LINKS), ids=lambda p: p or "root")
def test_deep_link_on_a_fresh_server_shows_one_menu(app_url, driver, path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{app_url}/{path}")
    wait = WebDriverWait(driver, RESULT_TIMEOUT)
    wait.until(lambda d: any(h.text.strip() == DEEP_LINKS[path] for h in d.find_elements(By.TAG_NAME, "h1")))
    menus = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebarNav']")
    assert len(menus) == 1, f"{len(menus)} navigation menus on /{path}"
    links = [a.text.strip() for a in menus[0].find_elements(By.CSS_SELECTOR, "a")]
    # A material icon is drawn from a ligature font, so its name ("home") precedes each label in the text.
    assert len(links) == len(MENU) and all(link.endswith(label) for link, label in zip(links, MENU)), links
    assert not any(link.endswith("app") for link in links) and not driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
