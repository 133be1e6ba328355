#!/usr/bin/env python3
"""Drives Keel's own pages (/ and /admin) in headless Chromium with Selenium.

Subcommands (each prints one JSON line of measurements, then PASS; on a
failure it prints what failed, the page's debug log and a screenshot path,
and exits 1):

  single  --page URL --docx FILE --question TEXT --expect-text TEXT
          [--admin URL --admin-token T] [--screenshots DIR]
      Upload the DOCX, wait for its sections, ask in a new chat, check the
      streamed answer (exactly the expected text, once), a source that opens
      its section, the model's name; then the admin page, if given.
  cluster --page URL --docx FILE --question TEXT --expect-text TEXT --pids JSON
      The same through a balancer; once tokens are on screen, SIGKILL the
      instance serving the stream (JSON maps Keel-Instance to pid) and check
      the page reconnects by Last-Event-ID and still shows the whole answer once.
  timing  --page URL --question TEXT --count N
      N questions in one chat: first-token times, and the bytes of the page's
      assets.

URL may carry ?api=KEEL_URL when the page is served from another origin.
Uses Debian's chromium and chromedriver. Standard library and selenium only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 60  # seconds, every explicit wait unless said otherwise


class Failure(Exception):
    pass


def start_browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


class Page:
    """The browser plus the helpers every subcommand shares."""

    def __init__(self, driver: webdriver.Chrome, screenshots: str | None):
        self.d = driver
        self.screenshots = screenshots

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def wait(self, condition, what: str, timeout: float = WAIT):
        """Waits until condition(driver) is truthy; fails naming `what`."""
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(lambda d: condition(d))
        except TimeoutException:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}") from None

    def wait_js(self, script: str, what: str, timeout: float = WAIT, *args):
        return self.wait(lambda d: d.execute_script(script, *args), what, timeout)

    def debug_log(self) -> list:
        try:
            return self.js("return window.keelDebug || []") or []
        except WebDriverException:
            return []

    def screenshot(self, name: str, whole: bool = False) -> str:
        directory = self.screenshots or tempfile.gettempdir()
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        # The viewport itself 1280×900 (the window's size would include the
        # browser's frame); `whole`: as tall as the page.
        height = max(900, int(self.js("return document.documentElement.scrollHeight"))) if whole else 900
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            self.d.save_screenshot(path)
        finally:
            self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return path

    # ---- the app page ----

    def open_app(self, url: str) -> None:
        self.d.get(url)
        self.wait_js("return document.body.dataset.ready === 'true' || "
                     "document.querySelector('#session-status').dataset.state === 'error'", "the page to start")
        state = self.js("return document.querySelector('#session-status').dataset.state")
        if state != "ready":
            raise Failure("no session: " + self.d.find_element(By.ID, "session-status").text)

    def upload(self, path: str) -> dict:
        """Uploads through the file input; waits for the document's sections."""
        name = os.path.basename(path)
        started = time.monotonic()
        self.d.find_element(By.ID, "file-input").send_keys(os.path.abspath(path))
        script = """
            const name = arguments[0];
            const doc = [...document.querySelectorAll('#documents .document')]
              .find((d) => d.querySelector('.hint') && d.querySelector('.hint').textContent.startsWith(name + ' ·'));
            if (!doc) return null;
            if (doc.dataset.status === 'failed') return {failed: doc.querySelector('.doc-status').textContent};
            const links = doc.querySelectorAll('.section-link');
            return doc.dataset.status === 'ready' && links.length ? {id: doc.dataset.id, sections: links.length} : null;
        """
        found = self.wait(lambda d: d.execute_script(script, name), f"{name} to be uploaded and its sections listed")
        if "failed" in found:
            raise Failure(f"the document failed: {found['failed']}")
        found["upload_to_sections_ms"] = round((time.monotonic() - started) * 1000)
        return found

    def new_chat(self) -> None:
        before = self.js("return document.querySelector('.chat-item[aria-current=true]')?.dataset.id || null")
        self.d.find_element(By.ID, "new-chat").click()
        self.wait_js("const c = document.querySelector('.chat-item[aria-current=true]'); return c && c.dataset.id !== arguments[0]",
                     "the new chat", WAIT, before)

    def ask(self, question: str) -> str:
        """Sends a question; returns its reply job's id once the reply shows."""
        count = self.js("return window.keelTimings.length")
        box = self.d.find_element(By.ID, "question")
        box.clear()
        box.send_keys(question)
        self.wait_js("return !document.querySelector('#send').disabled", "the Send button")
        self.d.find_element(By.ID, "send").click()
        job = self.wait_js("const t = window.keelTimings[arguments[0]]; return t && t.job", "the question to be accepted", WAIT, count)
        self.wait_js("return !!document.querySelector(`.message.assistant[data-job='${arguments[0]}']`)", "the reply to appear", WAIT, job)
        return job

    def reply(self, job: str) -> dict:
        return self.js("""
            const r = document.querySelector(`.message.assistant[data-job='${arguments[0]}']`);
            if (!r) return null;
            return {state: r.dataset.state, text: r.querySelector('.answer').textContent,
                    model: r.querySelector('.model-note').dataset.model || '', sources: r.querySelectorAll('.source-link').length,
                    replies: document.querySelectorAll(`.message.assistant[data-job='${arguments[0]}']`).length,
                    notes: [...r.querySelectorAll('.notes li')].map((n) => n.textContent)};
        """, job)

    def wait_answer(self, job: str, timeout: float = WAIT) -> dict:
        self.wait(lambda d: (self.reply(job) or {}).get("state") in ("done", "stopped", "failed"), "the answer to finish", timeout)
        return self.reply(job)

    def check_answer(self, job: str, reply: dict, expected: str) -> None:
        if reply["state"] != "done":
            raise Failure(f"the answer ended {reply['state']}: {reply['notes']}")
        # Compared without surrounding whitespace (the fake model's answer ends with a space).
        if reply["text"].strip() != expected.strip():
            text = reply["text"]
            raise Failure(f"the answer differs from the expected text ({len(text)} vs {len(expected)} chars): {text[:300]!r}…")
        if reply["replies"] != 1:
            raise Failure(f"the reply is shown {reply['replies']} times")
        mismatch = [e for e in self.debug_log() if e.get("kind") == "error" and e.get("job") == job]
        if mismatch:
            raise Failure(f"the page logged an error for the reply: {mismatch}")
        if not reply["model"]:
            raise Failure("no model name is shown on the answer")

    def check_source(self, job: str) -> str:
        """Opens the answer's first source; returns the section's title."""
        link = self.d.find_element(By.CSS_SELECTOR, f".message.assistant[data-job='{job}'] .source-link")
        link.click()
        self.wait_js("const d = document.querySelector('#section-dialog');"
                     "return d.open && document.querySelector('#section-text').textContent.trim().length > 0", "the cited section's text")
        title = self.d.find_element(By.ID, "section-title").text
        self.d.find_element(By.ID, "section-close").click()
        self.wait_js("return !document.querySelector('#section-dialog').open", "the section dialog to close")
        return title

    def timing(self, job: str) -> dict:
        t = self.js("return window.keelTimings.find((t) => t.job === arguments[0])", job) or {}
        out = {}
        if t.get("firstToken") is not None:
            out["first_token_ms"] = round(t["firstToken"] - t["asked"], 1)
        if t.get("done") is not None:
            out["answer_ms"] = round(t["done"] - t["asked"], 1)
        return out

    def asset_bytes(self) -> dict:
        """The page's own assets (the navigation and every non-API resource)."""
        entries = self.js("""
            const nav = performance.getEntriesByType('navigation').map((e) => ({name: e.name, type: 'navigation',
              transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}));
            const res = performance.getEntriesByType('resource')
              .filter((e) => !['fetch', 'xmlhttprequest', 'beacon'].includes(e.initiatorType))
              .map((e) => ({name: e.name, type: e.initiatorType, transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}));
            return nav.concat(res);
        """)
        return {
            "assets": [{"path": urllib.parse.urlsplit(e["name"]).path, "transfer": e["transfer"], "encoded": e["encoded"],
                        "decoded": e["decoded"]} for e in entries],
            "total_transfer": sum(e["transfer"] for e in entries),
            "total_encoded": sum(e["encoded"] for e in entries),
            "total_decoded": sum(e["decoded"] for e in entries),
        }

    # ---- the admin page ----

    def check_admin(self, url: str, token: str) -> dict:
        self.d.get(url)
        self.wait_js("return !!document.querySelector('#signin-form')", "the admin sign-in form")
        field = self.d.find_element(By.ID, "admin-token")
        field.send_keys(token)
        field.send_keys(Keys.ENTER)
        self.wait_js("return !document.querySelector('#dashboard').hidden || !!document.querySelector('#signin-error').textContent",
                     "the dashboard")
        error = self.d.find_element(By.ID, "signin-error").text
        if error:
            raise Failure(f"admin sign-in failed: {error}")
        read = """
            const n = (sel) => Number((document.querySelector(sel)?.textContent || '0').replace(/[^0-9.]/g, '')) || 0;
            const chat = document.querySelector("#job-types tr[data-type='chat.reply'][data-status='succeeded'] .count");
            return {instances: document.querySelectorAll('#instances tbody tr').length,
                    uploads_complete: n('#uploads-complete dd'),
                    chat_replies_succeeded: chat ? Number(chat.textContent.replace(/[^0-9]/g, '')) : 0,
                    updated: document.querySelector('#updated').textContent};
        """
        # The overview may lag the store by a refresh: wait for what we made to show.
        self.wait(lambda d: (lambda r: r["instances"] > 0 and r["uploads_complete"] >= 1 and r["chat_replies_succeeded"] >= 1)(d.execute_script(read)),
                  "the admin page to show an instance, a complete upload and a succeeded chat.reply job")
        # ... and that it refreshes by itself.
        first = self.js(read)["updated"]
        self.wait(lambda d: d.execute_script(read)["updated"] != first, "the dashboard to refresh", 15)
        return self.js(read)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


# ---- subcommands ----

def run_single(page: Page, args) -> dict:
    page.open_app(args.page)
    result = {"upload": page.upload(args.docx)}
    page.new_chat()
    job = page.ask(args.question)
    reply = page.wait_answer(job)
    page.check_answer(job, reply, args.expect_text)
    result.update(page.timing(job))
    result.update({"job": job, "model": reply["model"], "sources": reply["sources"], "answer_chars": len(reply["text"])})
    result["source_opened"] = page.check_source(job)
    streams = [e for e in page.debug_log() if e.get("kind") == "request" and e.get("stream") == job]
    result["stream_instances"] = sorted({e.get("instance") for e in streams if e.get("instance")})
    if page.screenshots:
        page.js("window.scrollTo(0, 0)")
        result["app_screenshot"] = page.screenshot("app.png")
    if args.admin:
        if not args.admin_token:
            raise Failure("--admin needs --admin-token")
        result["admin"] = page.check_admin(args.admin, args.admin_token)
        if page.screenshots:
            result["admin_screenshot"] = page.screenshot("admin.png", whole=True)
    return result


def run_cluster(page: Page, args) -> dict:
    pids = json.loads(args.pids)
    page.open_app(args.page)
    result = {"upload": page.upload(args.docx)}
    page.new_chat()
    job = page.ask(args.question)
    page.wait(lambda d: (page.reply(job) or {}).get("text", "").count("tok") >= args.kill_after_tokens
              or (page.reply(job) or {}).get("state") in ("done", "stopped", "failed"),
              f"{args.kill_after_tokens} tokens on screen")
    if page.reply(job)["state"] != "streaming":
        raise Failure("the answer finished before the kill: use a slower model")
    opened = [e for e in page.debug_log() if e.get("kind") == "request" and e.get("stream") == job and e.get("status") == 200]
    if not opened:
        raise Failure("no open stream of the reply in the debug log")
    victim = opened[-1].get("instance")
    if victim not in pids:
        raise Failure(f"the stream is served by {victim!r}, which --pids does not name ({sorted(pids)})")
    # The page's clock just before the kill (the page may notice the break before a later reading).
    killed_at = page.js("return performance.now()")
    os.kill(int(pids[victim]), signal.SIGKILL)
    shown_at_kill = page.reply(job)["text"]
    reply = page.wait_answer(job, args.answer_timeout)
    page.check_answer(job, reply, args.expect_text)
    log = page.debug_log()
    reconnects = [e for e in log if e.get("kind") == "reconnect" and e.get("job") == job and e.get("t", 0) >= killed_at]
    if not reconnects or not any(e.get("lastEventId") not in (None, "") for e in reconnects):
        raise Failure(f"no reconnect with a Last-Event-ID after the kill: {reconnects}")
    tokens_after = [e for e in log if e.get("kind") == "event" and e.get("job") == job and e.get("type") == "token" and e.get("t", 0) >= killed_at]
    after = [e for e in log if e.get("kind") == "request" and e.get("stream") == job and e.get("t", 0) >= killed_at and e.get("status") == 200]
    result.update(page.timing(job))
    result.update({
        "job": job, "killed_instance": victim, "killed_pid": int(pids[victim]), "chars_on_screen_at_kill": len(shown_at_kill),
        "reconnects": len(reconnects), "last_event_ids_sent": [e.get("lastEventId") for e in reconnects],
        "resumed_on": sorted({e.get("instance") for e in after if e.get("instance")}),
        "resets": len([e for e in log if e.get("kind") == "event" and e.get("job") == job and e.get("type") == "reset"]),
        "kill_to_next_token_ms": round(tokens_after[0]["t"] - killed_at) if tokens_after else None,
        "answer_chars": len(reply["text"]), "model": reply["model"],
    })
    if page.screenshots:
        result["app_screenshot"] = page.screenshot("cluster.png")
    return result


def run_timing(page: Page, args) -> dict:
    page.open_app(args.page)
    weight = page.asset_bytes()  # before the questions fill the resource timing buffer
    page.new_chat()
    first = []
    for _ in range(args.count):
        job = page.ask(args.question)
        reply = page.wait_answer(job)
        if reply["state"] != "done":
            raise Failure(f"question {len(first) + 1} ended {reply['state']}: {reply['notes']}")
        t = page.timing(job)
        if "first_token_ms" not in t:
            raise Failure(f"question {len(first) + 1} recorded no first token")
        first.append(t["first_token_ms"])
    return {
        "questions": len(first), "first_token_ms": {"p50": percentile(first, 50), "p95": percentile(first, 95), "max": max(first),
                                                    "all": first},
        "page_bytes": weight,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("single", "cluster"):
        p = sub.add_parser(name)
        p.add_argument("--page", required=True)
        p.add_argument("--docx", required=True)
        p.add_argument("--question", required=True)
        p.add_argument("--expect-text", required=True)
        p.add_argument("--screenshots")
        if name == "single":
            p.add_argument("--admin")
            p.add_argument("--admin-token")
        else:
            p.add_argument("--pids", required=True, help='{"instance id": pid, ...}')
            p.add_argument("--kill-after-tokens", type=int, default=5)
            p.add_argument("--answer-timeout", type=float, default=180)
    p = sub.add_parser("timing")
    p.add_argument("--page", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--screenshots")
    args = parser.parse_args()

    driver = start_browser()
    page = Page(driver, args.screenshots)
    try:
        run = {"single": run_single, "cluster": run_cluster, "timing": run_timing}[args.command]
        result = run(page, args)
        print(json.dumps(result, sort_keys=True))
        print("PASS")
        return 0
    except (Failure, WebDriverException) as error:
        print(f"FAIL {args.command}: {error}", file=sys.stderr)
        try:
            shot = page.screenshot(f"failure-{args.command}.png")
            print(f"screenshot: {shot}", file=sys.stderr)
        except WebDriverException:
            pass
        print("debug log (last 80 entries):", file=sys.stderr)
        for entry in page.debug_log()[-80:]:
            print("  " + json.dumps(entry, sort_keys=True), file=sys.stderr)
        try:
            for entry in driver.get_log("browser"):
                print(f"console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
        except WebDriverException:
            pass
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
