"""The web triage UI in a real browser (Debian chromium, headless, via Selenium
and the system chromedriver), on a database produced by a real recording with
attacks, and on an ingested Windows database. Screenshots are saved under
test-artifacts/ui/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import Recording, generate, ktriage
from uiserver import UiServer

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
WINDOWS = Path(os.environ.get("KTRIAGE_WINDOWS_DATA",
                              Path(__file__).resolve().parents[2] / "shared" / "data" / "windows"))


@pytest.fixture(scope="module")
def attack_db(root: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("ui") / "attacks.db"
    rec = Recording(db)
    for name in ("thread_hijack", "wx_memory", "memfd_exec", "network"):
        generate(name)
    rec.wait_rows("SELECT 1 FROM detection WHERE name = 'FILELESS_EXECUTION'")
    rec.stop()
    return str(db)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _wait(driver, css: str, timeout: float = 15):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_detection_to_chain_to_process_tree(attack_db: str, browser) -> None:
    from selenium.webdriver.common.by import By

    ui = UiServer(attack_db)
    try:
        browser.get(ui.url + "#/")
        _wait(browser, "#detections tbody tr.clickable")
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#detections td.name")]
        assert {"THREAD_HIJACK_INTENT", "WX_MEMORY", "FILELESS_EXECUTION"} <= set(names)
        browser.save_screenshot(str(ARTIFACTS / "1-detections.png"))

        row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#detections tr.clickable")
                   if r.find_element(By.CSS_SELECTOR, "td.name").text == "THREAD_HIJACK_INTENT")
        row.find_element(By.CSS_SELECTOR, "td.name").click()
        _wait(browser, "#chain .chain-event")
        assert "THREAD_HIJACK_INTENT" in browser.find_element(By.ID, "detection-name").text
        chain = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chain pre")]
        assert len(chain) == 3 and "op=PTRACE_ATTACH" in chain[0] and "op=PTRACE_SETREGS" in chain[1]
        assert all(block.splitlines()[1].startswith("Meta ") for block in chain), "events expanded like the preview"
        assert any("Origin addr=0x" in block and "Stack  frames=" in block for block in chain)
        assert browser.find_elements(By.CSS_SELECTOR, "a.technique")[0].get_attribute("href").startswith(
            "https://attack.mitre.org/techniques/T1055/")
        browser.save_screenshot(str(ARTIFACTS / "2-detection-chain.png"))

        browser.find_elements(By.CSS_SELECTOR, "p a.proc-link")[0].click()  # the actor
        _wait(browser, "#process-tree")
        edges = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".edge-into")]
        assert any("THREAD_HIJACK_INTENT" in e for e in edges), "the injected-into edge is drawn"
        assert browser.find_elements(By.CSS_SELECTOR, "#timeline tr"), "the actor's timeline"
        assert browser.find_elements(By.CSS_SELECTOR, "#process-tree .ancestor"), "its parents"
        browser.save_screenshot(str(ARTIFACTS / "3-process.png"))

        browser.find_element(By.CSS_SELECTOR, ".edge-into a.proc-link").click()  # to the target
        _wait(browser, ".edge-by")
        assert "injected by" in browser.find_element(By.CSS_SELECTOR, ".edge-by").text
        browser.save_screenshot(str(ARTIFACTS / "4-target.png"))
    finally:
        ui.close()


def test_search_and_sql_box(attack_db: str, browser) -> None:
    from selenium.webdriver.common.by import By

    ui = UiServer(attack_db)
    try:
        browser.get(ui.url + "#/search?q=memfd")
        _wait(browser, "#results tr td")
        assert "memfd" in browser.find_element(By.ID, "results").text
        assert "token" not in browser.current_url, "the token leaves the address bar once it is kept"
        browser.get(ui.base + "/#/sql")  # the same tab: the token is in its sessionStorage
        _wait(browser, "#sql textarea")
        browser.find_element(By.CSS_SELECTOR, "#sql button").click()
        _wait(browser, "#sql-result th")
        assert "FILELESS_EXECUTION" in browser.find_element(By.ID, "sql-result").text
        browser.save_screenshot(str(ARTIFACTS / "5-sql.png"))
        box = browser.find_element(By.CSS_SELECTOR, "#sql textarea")
        box.clear()
        box.send_keys("select x'00ff' as b, 1e999 as f")
        browser.find_element(By.CSS_SELECTOR, "#sql button").click()
        _wait(browser, "#sql-result td.marked")
        assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#sql-result td")] == ["x'00ff'", "inf"]
        browser.execute_script("sessionStorage.clear()")
        browser.get(ui.base + "/#/")  # no token: the page says where to get it, and shows no data
        _wait(browser, "p.error")
        assert "open the URL that `ktriage ui` printed" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    finally:
        ui.close()


def test_api_error_shape_and_writes_refused(attack_db: str) -> None:
    ui = UiServer(attack_db)
    try:
        for path, status, code in (("/api/nope", 404, "not_found"), ("/api/process", 400, "bad_parameter"),
                                   ("/api/detection?id=detection/x%231", 404, "not_found"),
                                   ("/api/process?pid=abc", 400, "bad_parameter")):
            got_status, body = ui.get(path)
            assert (got_status, set(body), set(body["error"]), body["error"]["code"]) == (
                status, {"ok", "error"}, {"code", "message"}, code), path
        status, body, _ = ui.request("/api/detections", method="POST")
        assert status == 405 and body["error"]["code"] == "method_not_allowed"
        status, body = ui.sql("DELETE FROM detection")
        assert status == 400 and body["error"]["code"] == "query_failed"
        status, body = ui.sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
        assert status == 400 and "time limit" in body["error"]["message"]
        status, body = ui.get("/api/meta")
        assert status == 200 and body["result"]["counts"]["detection"] > 0
    finally:
        ui.close()


def test_windows_database_and_a_live_recording(root: None, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    if not WINDOWS.is_dir():
        pytest.skip(f"no Windows samples at {WINDOWS}")
    win = tmp_path / "win.db"
    assert ktriage("ingest", str(WINDOWS / "EVTX-ATTACK-SAMPLES" / "Credential Access"), "--db", str(win)).returncode == 0
    ui = UiServer(str(win))
    try:
        browser.get(ui.url + "#/?min_severity=6")
        _wait(browser, "#detections tbody tr.clickable")
        assert "LSASS_MEMORY_ACCESS" in browser.find_element(By.ID, "detections").text
        browser.save_screenshot(str(ARTIFACTS / "6-windows.png"))
    finally:
        ui.close()
    live = tmp_path / "live.db"
    rec = Recording(live)
    ui = UiServer(str(live))
    try:
        browser.get(ui.url + "#/")
        _wait(browser, "#detections")
        generate("wx_memory")  # detected while the page is open: the list updates by itself
        deadline = time.monotonic() + 20
        while "WX_MEMORY" not in browser.find_element(By.ID, "detections").text and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "WX_MEMORY" in browser.find_element(By.ID, "detections").text
        browser.save_screenshot(str(ARTIFACTS / "7-live.png"))
    finally:
        ui.close()
        rec.stop()
