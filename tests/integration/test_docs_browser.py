"""The built docs site in Debian's headless Chromium with the network refused: every topic, message and a field rendered.

How "no network" is proved (docs/asyncapi-docs.md): Chromium runs with every request routed through a proxy that does
not exist (`--proxy-server=http://127.0.0.1:9 --proxy-bypass-list=<-loopback>`, so not even loopback is exempt), and
the test drives it over the DevTools protocol (`--remote-debugging-pipe`), recording every request the page makes
(`Network.requestWillBeSent`). The page must render with only `file://` requests and none failed. A control page that
does reference the network shows that such requests are seen by the recorder and refused, so a silent pass is not
possible. Missing Chromium, graphviz or the Node tools is a failure naming the make target, never a skip.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from contracts import REGISTRY
from fleet.docs.site import RENDER_ELEMENT, DocsToolsMissing, build_site
from fleet.docs.graph import GraphvizMissing

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "reports" / "docs-site.png"
REFUSING_PROXY = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]  # port 9: nothing listens
RENDER_TIMEOUT_S = 60.0


class Chromium:
    """Debian's headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_chromium_r, to_chromium_w = os.pipe()
        from_chromium_r, from_chromium_w = os.pipe()
        # High numbers, so the shell's `3<&N 4>&M` never overwrites one end with the other.
        child_in = fcntl.fcntl(to_chromium_r, fcntl.F_DUPFD_CLOEXEC, 100)
        child_out = fcntl.fcntl(from_chromium_w, fcntl.F_DUPFD_CLOEXEC, 100)
        os.close(to_chromium_r)
        os.close(from_chromium_w)
        args = [binary, "--headless=new", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe", *REFUSING_PROXY,
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={profile}"]
        command = "exec " + " ".join(shlex.quote(a) for a in args) + f" 3<&{child_in} 4>&{child_out}"
        self.process = subprocess.Popen(["bash", "-c", command], pass_fds=(child_in, child_out),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_in)
        os.close(child_out)
        self._writer = os.fdopen(to_chromium_w, "wb", buffering=0)
        self._reader = os.fdopen(from_chromium_r, "rb", buffering=0)
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._reader.read(65536):
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._writer.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("chromium closed the DevTools pipe")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, width: int = 1400, height: int = 2000) -> str:
        """A new tab with the network domain recorded; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        return session

    def evaluate(self, session: str, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requests(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]

    def failures(self, session: str) -> list[str]:
        return [e["params"].get("errorText", "") for e in self.events
                if e.get("method") == "Network.loadingFailed" and e.get("sessionId") == session]

    def drain(self, session: str, seconds: float) -> None:
        """Waits, collecting events (a no-op evaluation moves queued events into `events`)."""
        time.sleep(seconds)
        self.evaluate(session, "1")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout_s=5)
        except Exception:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()  # only the process this test started
            self.process.wait()


@pytest.fixture
def chromium(tmp_path):
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is not installed, so the docs' browser test cannot run: run `make debian-tools`",
                    pytrace=False)
    browser = Chromium(binary, tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def site(tmp_path) -> Path:
    try:
        return build_site(tmp_path / "site")
    except DocsToolsMissing as error:
        pytest.fail(f"{error}", pytrace=False)  # names `make docs-tools`
    except GraphvizMissing as error:
        pytest.fail(f"{error}", pytrace=False)  # names `make debian-tools`


def _rendered_text(browser: Chromium, session: str) -> str:
    """The text of the element the React component renders into, once it has rendered and expanded every schema."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    ready = f"!!document.querySelector('#{RENDER_ELEMENT} .aui-root')"
    while not browser.evaluate(session, ready):
        if time.monotonic() > deadline:
            text = browser.evaluate(session, f"document.getElementById('{RENDER_ELEMENT}').innerText")
            raise AssertionError(f"the AsyncAPI document did not render within {RENDER_TIMEOUT_S}s; the page says: {text[:500]}")
        time.sleep(0.25)
    # The component renders more than once (first a shell, then the parsed document): wait until the text settles.
    before = _settled_length(browser, session, deadline)
    # Payload schemas start collapsed: press the first "Expand all" (the first operation's payload), as a reader would.
    # Expanding all seventy takes a minute of rendering, and one payload is enough to show fields are rendered.
    pressed = browser.evaluate(session, f"""(() => {{
        const button = [...document.querySelectorAll('#{RENDER_ELEMENT} button')].find(b => b.textContent.trim() === 'Expand all'
            && [...b.parentElement.parentElement.querySelectorAll('span')].some(s => s.textContent.trim() === 'Payload'));
        if (button) button.click();
        return !!button; }})()""")
    assert pressed, "no payload schema to expand on the rendered page"
    # The expanded schema renders after the click, later on a busy machine: wait for the text to grow, then to settle.
    while _text_length(browser, session) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    _settled_length(browser, session, deadline)
    return browser.evaluate(session, f"document.getElementById('{RENDER_ELEMENT}').innerText")


def _text_length(browser: Chromium, session: str) -> int:
    return browser.evaluate(session, f"document.getElementById('{RENDER_ELEMENT}').innerText.length")


def _settled_length(browser: Chromium, session: str, deadline: float) -> int:
    """The rendered text's length once it has not changed for three looks in a row (or at the deadline)."""
    length, steady = -1, 0
    while steady < 3 and time.monotonic() < deadline:
        now = _text_length(browser, session)
        steady, length = (steady + 1, now) if now == length else (0, now)
        time.sleep(0.3)
    return length


def test_the_refusing_proxy_and_the_request_recorder_catch_a_page_that_needs_the_network(chromium, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Inter">'
                       '<script src="https://unpkg.com/@asyncapi/react-component@latest/browser/standalone/index.js"></script>'
                       '</head><body><img src="http://127.0.0.1:8/x.png"><p id="done">loaded</p></body></html>')
    session = chromium.page()
    chromium.send("Page.navigate", {"url": control.as_uri()}, session=session)
    deadline = time.monotonic() + 20
    while len(chromium.failures(session)) < 3 and time.monotonic() < deadline:
        chromium.drain(session, 0.25)
    remote = [url for url in chromium.requests(session) if not url.startswith("file:")]
    assert sorted(remote) == sorted(["https://fonts.googleapis.com/css?family=Inter", "http://127.0.0.1:8/x.png",
                                     "https://unpkg.com/@asyncapi/react-component@latest/browser/standalone/index.js"])
    failures = chromium.failures(session)
    assert len(failures) == 3 and all("PROXY" in f for f in failures), failures  # refused: never reached the network


def test_the_built_site_renders_every_topic_message_and_field_description_offline(chromium, site):
    session = chromium.page()
    chromium.send("Page.navigate", {"url": site.as_uri()}, session=session)
    text = _rendered_text(chromium, session)
    chromium.drain(session, 0.5)

    requests = chromium.requests(session)
    assert requests and all(url.startswith("file://") for url in requests), f"the page asked for the network: {requests}"
    assert chromium.failures(session) == [], "a file of the site is missing"

    missing_topics = [t.name for t in REGISTRY if t.name not in text]
    assert missing_topics == [], "topics not on the rendered page"
    document = json.loads((site.parent / "asyncapi.json").read_text())
    names = {key: m.get("name") or m.get("title") or key for key, m in document["components"]["messages"].items()}
    assert names and [n for n in names.values() if n not in text] == [], "messages not on the rendered page"
    descriptions = {f"{t.model.__name__}.{field}": info.description for t in REGISTRY
                    for field, info in t.model.model_fields.items() if info.description}
    shown = [name for name, description in descriptions.items() if description in text]
    assert shown, "no field description on the rendered page"

    # The top of the page: header, fleet graph, info, servers and the first operation with its payload expanded.
    chromium.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": 2600, "deviceScaleFactor": 1, "mobile": False}, session=session)
    time.sleep(0.5)
    png = base64.b64decode(chromium.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
