"""Opens the browser tus page in headless Chromium and waits for its verdict.

Usage: check.py PAGE_URL  (the page reads ?keel=KEEL_URL; prints the page's log, exits 0 on PASS)
"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(sys.argv[1])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.title in ("", "running"):
        time.sleep(0.2)
    print(driver.find_element("id", "log").text)
    for entry in driver.get_log("browser"):
        print("console:", entry.get("level"), entry.get("message"))
    sys.exit(0 if driver.title.startswith("PASS") else 1)
finally:
    driver.quit()
