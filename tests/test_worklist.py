"""report.html, the worklist page of a batch, opened in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): it loads without console errors, its rows follow scores.csv, its images load,
failures are listed with their reason, and a screenshot is kept (its path is printed)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium(tmp_path: Path, monkeypatch):
    """A Chromium driven by Debian's chromedriver, with a fresh profile and nothing downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("chromium and chromium-driver (Debian) are not installed")
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium's manager must not look for drivers on the network
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1366,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.mark.slow
def test_report_page_in_headless_chromium(tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By

    datalist = tiny_dataset(tmp_path / "data", n_healthy=0, n_anomalous=3, seed=5)
    studies = tmp_path / "studies"
    for item in json.loads(datalist.read_text())["testing"]:
        folder = studies / item["name"]
        folder.mkdir(parents=True)
        for key in ("t1", "t1c", "t2", "flair"):
            shutil.copy(datalist.parent / item[key], folder)
    broken = studies / "broken <b>"
    shutil.copytree(folder, broken)
    next(broken.glob("*_flair.nii.gz")).unlink()
    out = tmp_path / "out"
    weights = tiny_weights(tmp_path / "tiny.pt")
    proc = run_bundle("inference", "inference.yaml", "--dataset_dir", str(studies), "--output_dir", str(out),
                      "--weights", str(weights), *TINY_ARGS, "--t_stride", "125", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    with (out / "scores.csv").open() as f:
        ranked = [row["study"] for row in csv.DictReader(f)]
    assert len(ranked) == 3

    copy = tmp_path / "copied"  # works from a copied folder
    shutil.copytree(out, copy)
    browser = chromium(tmp_path, monkeypatch)
    try:
        browser.get((copy / "report.html").as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "table#worklist tbody tr")
        assert [r.find_element(By.CSS_SELECTOR, "th[scope=row]").text for r in rows] == ranked
        images = browser.find_elements(By.CSS_SELECTOR, "table#worklist img")
        assert len(images) == 3 and all(img.get_attribute("alt") for img in images)
        assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in images), "an overview image did not load"  # fmt: skip
        failed = browser.find_elements(By.CSS_SELECTOR, "table#failed tbody tr")
        assert [r.find_element(By.TAG_NAME, "th").text for r in failed] == ["broken <b>"]
        assert "missing modality flair" in failed[0].text
        assert browser.find_elements(By.CSS_SELECTOR, "table#worklist thead th[scope=col]")
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        shot = tmp_path / "report_screenshot.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        print(f"report.html screenshot: {shot}")
    finally:
        browser.quit()
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html, "the page must fetch nothing"
