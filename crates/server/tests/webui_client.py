"""The node's page in a real headless browser (Debian's Chromium, driven
through chromedriver by Selenium), against a running Hearth server with an
API key: a wrong key gets a clear message; a message to the real model
streams back; the stop button stops a long reply; under load the dashboard's
counters and charts move. Screenshots of chat and dashboard go to SHOT_DIR.
Usage: python3 webui_client.py BASE_URL API_KEY SHOT_DIR."""

import json
import os
import sys
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, key, shots = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 90)
by_id = lambda i: driver.find_element(By.ID, i)


def set_value(element_id, value):
    el = by_id(element_id)
    el.clear()
    el.send_keys(str(value))


def send(text):
    set_value("input", text)
    by_id("send").click()


def last_reply():
    return driver.find_elements(By.CSS_SELECTOR, "#messages > li.assistant")[-1]


def load(n, max_tokens):
    body = json.dumps({"messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": max_tokens, "ignore_eos": True}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", body, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    threads = [threading.Thread(target=lambda: urllib.request.urlopen(req, timeout=120).read()) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


try:
    t0 = time.time()
    driver.get(base + "/")
    loaded_ms = driver.execute_script("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    # The server wants a key: the page asks, and names a wrong one as wrong.
    wait.until(lambda d: by_id("key-banner").is_displayed())
    paint_ms = driver.execute_script("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : -1")
    set_value("key-input", "not-the-key")
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(lambda d: "refused" in by_id("key-error").text)
    set_value("key-input", key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(lambda d: not by_id("key-banner").is_displayed())
    wait.until(lambda d: by_id("model").get_attribute("value") == "smollm2")

    # A reply streams in, with its figures.
    driver.find_element(By.CSS_SELECTOR, "#settings summary").click()
    set_value("temperature", 0)
    set_value("max-tokens", 40)
    send("Name a color.")
    wait.until(lambda d: last_reply().get_attribute("data-done"))
    reply = last_reply()
    assert reply.find_element(By.CLASS_NAME, "body").text.strip(), "no reply text"
    assert "tok/s" in reply.find_element(By.CLASS_NAME, "stats").text, reply.text
    # The conversation is kept in the browser.
    saved = json.loads(driver.execute_script("return localStorage.getItem('hearth-conversations')"))
    assert saved[0]["messages"][-1]["content"], saved

    # A JSON schema in the settings holds the reply to it.
    set_value("schema", json.dumps({"type": "object", "properties": {"color": {"type": "string", "maxLength": 20}}, "required": ["color"], "additionalProperties": False}))
    set_value("max-tokens", 60)
    send("Name a color.")
    wait.until(lambda d: last_reply().get_attribute("data-done"))
    assert set(json.loads(last_reply().find_element(By.CLASS_NAME, "body").text)) == {"color"}, last_reply().text
    by_id("schema").clear()

    # Stop ends a long reply early.
    set_value("max-tokens", 3000)
    send("Tell a very long story about the sea.")
    wait.until(lambda d: len(last_reply().find_element(By.CLASS_NAME, "body").text) > 20)
    by_id("stop").click()
    wait.until(lambda d: last_reply().get_attribute("data-done") == "stopped")
    assert by_id("send").is_displayed()
    driver.save_screenshot(os.path.join(shots, "chat.png"))

    # The dashboard follows the load.
    by_id("tab-dash").click()
    wait.until(lambda d: int(d.execute_script("return document.body.dataset.statsUpdates || '0'")) >= 1)
    before = float(by_id("stat-generated").text)
    threads = load(4, 200)
    wait.until(lambda d: float(by_id("stat-running").text) >= 1)
    for t in threads:
        t.join()
    wait.until(lambda d: float(by_id("stat-generated").text) >= before + 4 * 200)
    wait.until(lambda d: float(by_id("stat-running").text) == 0)
    wait.until(lambda d: int(by_id("chart-tps").get_attribute("data-points")) >= 3)
    assert "more users of" in by_id("capacity").text, by_id("capacity").text
    assert by_id("models-table").find_elements(By.TAG_NAME, "td")[0].text == "smollm2"
    driver.save_screenshot(os.path.join(shots, "dashboard.png"))
    # The tabs answer the keyboard; a narrow window still shows everything.
    by_id("tab-dash").send_keys("\ue012")  # ArrowLeft
    wait.until(lambda d: by_id("view-chat").is_displayed() and not by_id("view-dash").is_displayed())
    driver.set_window_size(420, 900)
    assert by_id("input").is_displayed() and by_id("send").is_displayed()
    driver.save_screenshot(os.path.join(shots, "chat-narrow.png"))
    print(f"page: first paint {paint_ms:.0f} ms, DOM ready {loaded_ms:.0f} ms; test took {time.time() - t0:.1f} s")
finally:
    driver.quit()

print("webui client: ok")
