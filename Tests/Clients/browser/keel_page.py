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
  extras  --page URL --docx FILE --big FILE --expect-text TEXT
          [--fallback-from NAME] [--question TEXT] [--upload-rate BYTES_PER_S]
          [--big-timeout S] [--allow-stopped-without-model]
      In one session, each a named check: a big upload interrupted by a
      reload resumes from the server's offset and becomes a document; Stop
      keeps the partial answer, marked stopped, also after a reload;
      conversations reopen with each answer shown once; every answer shows
      the fallback from NAME and the model that answered; at phone width
      (360 px) nothing overflows and the keyboard alone reaches the question
      and sends it with Enter. Needs a chain whose first model fails before
      its first token and whose second answers slowly (300 tokens 50 ms
      apart), and no model cooldown (so every answer falls back from a
      failure, not a cooldown). A reopened stopped answer must name its model
      unless --allow-stopped-without-model (then noted as a known gap).

URL may carry ?api=KEEL_URL when the page is served from another origin.
Uses Debian's chromium and chromedriver. Standard library and selenium only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
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
        self.wait_ready()

    def reload(self) -> None:
        """driver.refresh(), then waits for the page to start again."""
        self.d.refresh()
        self.wait_ready()

    def wait_ready(self) -> None:
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

    # ---- what the extras check ----

    def current_chat(self) -> str | None:
        return self.js("return document.querySelector('.chat-item[aria-current=true]')?.dataset.id || null")

    def upload_row(self, name: str) -> dict | None:
        """The row of `name` in the uploads in progress, or None."""
        return self.js("""
            const row = [...document.querySelectorAll('#uploads .upload')].find((r) => r.querySelector('.name')?.textContent === arguments[0]);
            if (!row) return null;
            const p = row.querySelector('progress');
            return {state: row.dataset.state, value: Number(p.value), max: Number(p.max),
                    status: row.querySelector('.upload-status').textContent, resumed: row.querySelector('.resumed')?.textContent || null};
        """, name)

    def document_named(self, name: str) -> dict | None:
        """The listed document whose file is `name`, or None."""
        return self.js("""
            const doc = [...document.querySelectorAll('#documents .document')]
              .find((d) => d.querySelector('.hint') && d.querySelector('.hint').textContent.startsWith(arguments[0] + ' ·'));
            return doc ? {id: doc.dataset.id, status: doc.dataset.status, text: doc.querySelector('.doc-status')?.textContent || ''} : null;
        """, name)

    def throttle_uploads(self, rate: int | None) -> None:
        """Chrome's network emulation: request bodies at `rate` bytes/s, or no limit."""
        if rate:
            self.d.execute_cdp_cmd("Network.enable", {})
            self.d.execute_cdp_cmd("Network.emulateNetworkConditions",
                                   {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": rate})
        else:
            self.d.execute_cdp_cmd("Network.emulateNetworkConditions",
                                   {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
            self.d.execute_cdp_cmd("Network.disable", {})

    def answer_notes(self, job: str) -> dict:
        """What an answer says of its models: the fallback notes and the model note."""
        return self.js("""
            const r = document.querySelector(`.message.assistant[data-job='${arguments[0]}']`);
            if (!r) return null;
            const note = r.querySelector('.model-note');
            return {fallbacks: [...r.querySelectorAll('.fallback-note')].map((n) => n.textContent),
                    model: note ? note.dataset.model || '' : null, model_text: note ? note.textContent : null};
        """, job)

    def click_when_fresh(self, selector: str, what: str) -> None:
        """Clicks `selector`, again if the page re-rendered it meanwhile."""
        def click(d):
            try:
                d.find_element(By.CSS_SELECTOR, selector).click()
                return True
            except StaleElementReferenceException:
                return False
        self.wait(click, what)

    def reopen_chat(self, chat: str, job: str) -> None:
        """Clicks the chat's .chat-item and waits for it to be shown anew,
        with the message of `job` (the elements shown before are marked, so
        an old copy never passes for the reopened one)."""
        self.wait_js("return !!document.querySelector(`.chat-item[data-id='${arguments[0]}']`)", f"chat {chat} in the chat list", WAIT, chat)
        self.js("document.querySelectorAll('#messages .message').forEach((m) => { m.keelOld = true; })")
        self.click_when_fresh(f".chat-item[data-id='{chat}']", f"the chat {chat} to be clicked")
        self.wait_js("""
            const c = document.querySelector('.chat-item[aria-current=true]');
            const m = document.querySelector(`.message.assistant[data-job='${arguments[1]}']`);
            return c && c.dataset.id === arguments[0] && m && !m.keelOld;
        """, f"chat {chat} to reopen with the reply {job}", WAIT, chat, job)

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


# ---- extras: resumed upload, Stop, reopened chats, fallbacks, phone width and keyboard ----

CHECKS = {
    "resume_upload": "upload resumes after a reload",
    "stop": "Stop keeps the partial answer, marked stopped",
    "reopen": "conversations reopen, answers shown once",
    "fallback": "fallback is shown",
    "phone_keyboard": "phone width and keyboard",
}


def token_prefix(text: str, full: str) -> str | None:
    """Why `text` is not a non-empty prefix of the fake model's answer
    `tok0 tok1 …` (and of `full`, the whole answer), or None when it is."""
    words = text.split()
    if not words:
        return "it is empty"
    wrong = next((i for i, w in enumerate(words) if w != f"tok{i}"), None)
    if wrong is not None:
        return f"word {wrong} is {words[wrong]!r}, not 'tok{wrong}'"
    if full and not full.startswith(text) and not full.startswith(text.rstrip()):
        return "it is not a prefix of --expect-text"
    return None


def check_resume_upload(page: Page, args) -> dict:
    path = os.path.abspath(args.big)
    name = os.path.basename(path)
    size = os.path.getsize(path)
    if page.document_named(name):
        raise Failure(f"a document of {name} is listed already: give the big file a new name")
    page.throttle_uploads(args.upload_rate)
    try:
        started = time.monotonic()
        page.d.find_element(By.ID, "file-input").send_keys(path)

        def past_a_fifth(d):
            row = page.upload_row(name)
            if not row:
                return None
            if row["state"] != "uploading" or row["value"] >= 0.2 * row["max"]:
                return row
            return None
        row = page.wait(past_a_fifth, f"the upload of {name} to pass 20 %", args.big_timeout)
        if row["state"] != "uploading" or row["value"] >= row["max"]:
            raise Failure(f"the upload was {row['state']} ({row['status']}) before the reload could interrupt it: lower --upload-rate")
        at_reload = row["value"]
        page.reload()
        listed = page.wait_js("""
            const item = [...document.querySelectorAll('#unfinished-list li')].find((li) => li.textContent.includes(arguments[0] + ' ('));
            return !document.querySelector('#unfinished').hidden && item ? item.textContent : null;
        """, f"{name} to be listed under #unfinished-list after the reload", WAIT, name)

        # The same file again: it must continue from the server's offset.
        page.d.find_element(By.ID, "file-input").send_keys(path)
        seen = page.wait_js("""
            const resume = window.keelDebug.find((e) => e.kind === 'resume');
            const created = window.keelDebug.some((e) => e.kind === 'request' && e.method === 'POST' && e.path === '/api/uploads');
            return resume || created ? {resume: resume || null, created} : null;
        """, f"{name} to resume (a `resume` entry in the debug log)")
        if seen["created"] or not seen["resume"]:
            raise Failure("choosing the same file after the reload started a new upload (POST /api/uploads) instead of resuming it")
        offset = seen["resume"]["offset"]
        if not isinstance(offset, (int, float)) or offset <= 0:
            raise Failure(f"the upload resumed from offset {offset!r}, not from where the server stopped (> 0)")
        if offset >= size:
            raise Failure(f"the server had all {size} bytes before the resume: the reload came too late")
        resumed_row = page.upload_row(name) or {}

        def uploaded(d):
            doc = page.document_named(name)
            if doc:
                return {"document": doc}
            row = page.upload_row(name)
            return {"failed": row["status"]} if row and row["state"] == "failed" else None
        end = page.wait(uploaded, f"the resumed upload of {name} to complete and its document to be listed", args.big_timeout)
        if "failed" in end:
            raise Failure(f"the resumed upload failed: {end['failed']}")
        uploaded_ms = round((time.monotonic() - started) * 1000)
    finally:
        page.throttle_uploads(None)
    page.wait_js("return ![...document.querySelectorAll('#unfinished-list li')].some((li) => li.textContent.includes(arguments[0] + ' ('))",
                 f"{name} to leave #unfinished-list once uploaded", WAIT, name)
    upload_posts = [e for e in page.debug_log() if e.get("kind") == "request" and e.get("method") == "POST" and e.get("path") == "/api/uploads"]
    if upload_posts:
        raise Failure(f"the page created another upload after resuming: {upload_posts}")

    def settled(d):
        doc = page.document_named(name)
        return doc if doc and doc["status"] in ("ready", "failed") else None
    try:
        document = page.wait(settled, f"the document of {name} to be ready", args.big_timeout)
    except Failure:
        document = page.document_named(name)  # still processing after the wait: accepted
    if document["status"] == "failed":
        raise Failure(f"the document of {name} failed: {document['text']}")
    if document["status"] not in ("ready", "processing"):
        raise Failure(f"the document of {name} is {document['status']!r}: {document['text']}")
    return {"bytes": size, "page_offset_at_reload": at_reload, "resumed_at": offset, "resumed_fraction": round(offset / size, 3),
            "unfinished_listed": listed.strip(), "resumed_note": (resumed_row.get("resumed") or "").strip(),
            "upload_ms": uploaded_ms, "document": document["id"], "document_status": document["status"],
            "document_ms": round((time.monotonic() - started) * 1000)}


def check_stop(page: Page, args, answers: list) -> dict:
    page.new_chat()
    chat = page.current_chat()
    job = page.ask(args.question)
    page.wait(lambda d: (lambda r: r["text"].count("tok") >= 5 or r["state"] in ("done", "stopped", "failed"))(page.reply(job)),
              "5 tokens of the answer on screen")
    before = page.reply(job)
    if before["state"] != "streaming":
        raise Failure(f"the answer was {before['state']} before Stop could be pressed: the chain must answer slowly")
    pressed = time.monotonic()
    page.d.find_element(By.ID, "stop").click()
    page.wait(lambda d: page.reply(job)["state"] in ("stopped", "done", "failed"), "the answer to be marked stopped after Stop", 5)
    stop_ms = round((time.monotonic() - pressed) * 1000)
    live = page.reply(job)
    if live["state"] != "stopped":
        raise Failure(f"after Stop the answer is {live['state']}, not stopped: {live['notes']}")
    why = token_prefix(live["text"], args.expect_text)
    if why:
        raise Failure(f"the stopped answer is not a non-empty prefix of the whole answer ({why}): {live['text'][:200]!r}")
    if live["text"].strip() == args.expect_text.strip():
        raise Failure("the whole answer arrived: Stop stopped nothing")
    if live["replies"] != 1:
        raise Failure(f"the stopped reply is shown {live['replies']} times")
    answers.append(("stopped answer, live", job, page.answer_notes(job)))

    page.reload()
    page.reopen_chat(chat, job)
    again = page.reply(job)
    if again["state"] != "stopped":
        raise Failure(f"after a reload and reopening the chat, the stopped answer shows as {again['state']}")
    if again["text"] != live["text"]:
        raise Failure(f"after a reload the stopped answer's text differs: {len(again['text'])} chars {again['text'][-60:]!r} "
                      f"vs {len(live['text'])} shown before {live['text'][-60:]!r}")
    if again["replies"] != 1:
        raise Failure(f"after a reload the stopped reply is shown {again['replies']} times")
    # The stored stopped reply names the model that wrote its partial answer.
    answers.append(("stopped answer, reopened", job, page.answer_notes(job)))
    return {"chat": chat, "job": job, "tokens_at_press": before["text"].count("tok"), "tokens_kept": len(live["text"].split()),
            "press_to_stopped_ms": stop_ms}


def check_reopen(page: Page, args, answers: list, earlier_chat: str) -> dict:
    page.new_chat()
    chat = page.current_chat()
    job = page.ask(args.question)
    reply = page.wait_answer(job)
    page.check_answer(job, reply, args.expect_text)
    streamed = reply["text"]
    timing = page.timing(job)
    answers.append(("finished answer, live", job, page.answer_notes(job)))

    page.reload()
    listed = page.wait_js("""
        const ids = [...document.querySelectorAll('#chats .chat-item')].map((c) => c.dataset.id);
        return arguments.length && [...arguments].every((id) => ids.includes(id)) ? ids : null;
    """, "the earlier chats in the chat list after the reload", WAIT, chat, earlier_chat)
    page.reopen_chat(chat, job)
    shown = page.js("""
        return {user: document.querySelectorAll('#messages .message.user').length,
                jobs: [...document.querySelectorAll('#messages .message.assistant')].map((m) => m.dataset.job)};
    """)
    if len(shown["jobs"]) != len(set(shown["jobs"])):
        raise Failure(f"the reopened chat shows an answer more than once: {shown['jobs']}")
    if len(shown["jobs"]) != shown["user"]:
        raise Failure(f"the reopened chat shows {len(shown['jobs'])} answers to {shown['user']} questions")
    again = page.reply(job)
    if again["state"] != "done":
        raise Failure(f"the reopened answer shows as {again['state']}: {again['notes']}")
    if again["text"] != streamed:
        raise Failure(f"the reopened answer differs from what was streamed ({len(again['text'])} vs {len(streamed)} chars): "
                      f"{again['text'][:120]!r}")
    answers.append(("finished answer, reopened", job, page.answer_notes(job)))
    result = {"chat": chat, "job": job, "chats_listed": len(listed), "answer_chars": len(streamed), "answers_in_chat": len(shown["jobs"])}
    result.update(timing)
    return result


def check_fallback(args, answers: list) -> dict:
    pattern = re.compile(r"Fallback: (\S+) → (\S+)")
    seen = {}
    for label, job, notes in answers:
        if not notes:
            raise Failure(f"{label} ({job}): the answer is not on the page")
        pairs = [m.groups() for m in map(pattern.search, notes["fallbacks"]) if m]
        from_ours = [to for frm, to in pairs if frm == args.fallback_from]
        if not from_ours:
            raise Failure(f"{label} ({job}): no .fallback-note names {args.fallback_from!r}: {notes['fallbacks']}")
        if not notes["model"]:
            raise Failure(f"{label} ({job}): the .model-note names no model ({notes['model_text']!r}); fallback notes {notes['fallbacks']}")
        if notes["model"] == args.fallback_from or notes["model"] not in from_ours:
            raise Failure(f"{label} ({job}): the .model-note names {notes['model']!r}, not the model the answer fell back to "
                          f"({from_ours})")
        seen[label] = {"fallback": notes["fallbacks"][0], "model": notes["model"]}
    return {"answers": seen}


def check_phone_keyboard(page: Page, args, answers: list) -> dict:
    d = page.d
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    try:
        page.reload()  # so the keyboard starts from the top of the page
        page.wait_js("return screen.width === 360", "the 360 px wide screen")
        layout = page.js("""
            const width = document.documentElement.scrollWidth;
            const wide = [...document.querySelectorAll('body *')].filter((e) => {
              const r = e.getBoundingClientRect();
              return r.width > 0 && r.right > 360.5 && ![...e.children].some((c) => c.getBoundingClientRect().right > 360.5);
            }).slice(0, 8).map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + String(e.className).split(' ').join('.') : ''}`);
            return {scrollWidth: width, innerWidth, wide};
        """)
        if layout["scrollWidth"] > 360:
            raise Failure(f"at 360 px the page is {layout['scrollWidth']} px wide; past the edge: {layout['wide']}")
        visible = {}
        for selector in ("#question", "#send"):
            box = page.js("""
                const e = document.querySelector(arguments[0]);
                e.scrollIntoView({block: 'center'});
                const r = e.getBoundingClientRect();
                const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height,
                        hit: hit === e || e.contains(hit), display: getComputedStyle(e).display, visibility: getComputedStyle(e).visibility};
            """, selector)
            if not (box["width"] > 0 and box["height"] > 0 and box["left"] >= 0 and box["right"] <= 360.5 and box["top"] >= 0
                    and box["bottom"] <= 800.5 and box["hit"] and box["visibility"] == "visible"):
                raise Failure(f"at 360 px {selector} is cut or hidden: {box}")
            visible[selector] = {"width": round(box["width"]), "height": round(box["height"])}
        page.js("window.scrollTo(0, 0)")

        # The keyboard alone: Tab from the top to the question, type, Enter.
        path = []
        for _ in range(40):
            ActionChains(d).send_keys(Keys.TAB).perform()
            focused = page.js("""
                const a = document.activeElement;
                return {id: a.id, tag: a.tagName.toLowerCase(), text: (a.textContent || '').trim().slice(0, 24)};
            """)
            path.append(f"{focused['tag']}#{focused['id']}" if focused["id"] else f"{focused['tag']}:{focused['text']!r}")
            if focused["id"] == "question":
                break
        else:
            raise Failure(f"40 Tabs from the top did not reach #question; focus went {' → '.join(path)}")
        count = page.js("return window.keelTimings.length")
        ActionChains(d).send_keys(args.question).send_keys(Keys.ENTER).perform()
        job = page.wait_js("const t = window.keelTimings[arguments[0]]; return t && t.job",
                           "the question typed and sent with Enter to be accepted", WAIT, count)
        page.wait(lambda d: (lambda r: r and r["text"].strip() and r["state"] in ("streaming", "done"))(page.reply(job)),
                  "the answer to the question sent with Enter to start streaming")
        answers.append(("answer sent by keyboard", job, page.answer_notes(job)))
        return {"scroll_width": layout["scrollWidth"], "inner_width": layout["innerWidth"], "visible": visible, "tabs_to_question": len(path), "tab_path": path, "job": job,
                **page.timing(job)}
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def run_extras(page: Page, args) -> dict:
    result = {}
    answers: list = []  # (label, job, notes, whether a model note is required) for the fallback check

    def check(key, run):
        started = time.monotonic()
        try:
            out = run()
        except Failure as error:
            raise Failure(f"{CHECKS[key]}: {error}") from None
        out["ms"] = round((time.monotonic() - started) * 1000)
        result[key] = out
        print(f"ok {CHECKS[key]} ({out['ms']} ms)", file=sys.stderr, flush=True)
        return out

    page.open_app(args.page)
    result["docx"] = page.upload(args.docx)
    check("resume_upload", lambda: check_resume_upload(page, args))
    stopped = check("stop", lambda: check_stop(page, args, answers))
    check("reopen", lambda: check_reopen(page, args, answers, stopped["chat"]))
    check("phone_keyboard", lambda: check_phone_keyboard(page, args, answers))
    check("fallback", lambda: check_fallback(args, answers))
    if page.screenshots:
        page.js("window.scrollTo(0, 0)")
        result["screenshot"] = page.screenshot("extras.png")
    return result


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
    p = sub.add_parser("extras")
    p.add_argument("--page", required=True)
    p.add_argument("--docx", required=True)
    p.add_argument("--big", required=True, help="a large .txt file (~40 MB) to upload, interrupt by a reload and resume")
    p.add_argument("--expect-text", required=True, help="the whole slow answer (tok0 … tok299)")
    p.add_argument("--fallback-from", default="broken", help="the model every answer falls back from")
    p.add_argument("--question", default="What does the report conclude?")
    p.add_argument("--upload-rate", type=int, default=4_000_000, help="bytes/s the browser sends, so the reload lands mid-upload")
    p.add_argument("--big-timeout", type=float, default=120)
    p.add_argument("--screenshots")
    args = parser.parse_args()

    driver = start_browser()
    page = Page(driver, args.screenshots)
    try:
        run = {"single": run_single, "cluster": run_cluster, "timing": run_timing, "extras": run_extras}[args.command]
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
