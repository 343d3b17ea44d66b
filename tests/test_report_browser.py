"""report.html in a real headless Chromium: it loads offline, has no console errors, shows
every figure (decoded, non-zero natural size), and its tables sort when a header is clicked.

Talks to the browser over the DevTools protocol (a small client on websocket-client), so
console messages from the page's first instant are seen. Skipped where no Chromium is
installed (Debian: ``apt-get install chromium``). A full-page screenshot is saved in the
test's temp folder (``page.png``).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import pytest
from report_study import make_study

from xnetmap.report import write_reports

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium browser installed (Debian: apt-get install chromium)"
)

NAMES = [
    "efficientnet_lite0_imagenet",
    "ResNet-v2-152 (TF-slim)",
    "Inception-v4",
    "mobilenetv3_large_100.ra_in1k",
    "vit_small_patch16_224.augreg",
]


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands on one page, events kept."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.deadline_s = timeout
        self.events: list[dict] = []
        self.next_id = 0
        self.session = None

    def send(self, method: str, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = self._recv()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        end = time.monotonic() + self.deadline_s
        while time.monotonic() < end:
            for e in self.events:
                if e["method"] == method:
                    return e
            self._recv()
        raise TimeoutError(f"no {method} event within {self.deadline_s} s")

    def _recv(self) -> dict:
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
        return msg

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("websocket", reason="websocket-client missing: pip install -e '.[test]'")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--window-size=1280,900",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"Chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        dt = DevTools(f"ws://127.0.0.1:{port}{path}")
        target = dt.send("Target.createTarget", url="about:blank")["targetId"]
        dt.session = dt.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable")
        yield dt
        dt.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _errors(events) -> list:
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            out.append(p["exceptionDetails"])
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(p.get("args"))
        elif e["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(p["entry"])
    return out


def _eval(dt: DevTools, expression: str):
    res = dt.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
    if "exceptionDetails" in res:
        raise AssertionError(f"page script failed: {res['exceptionDetails']}")
    return res["result"].get("value")


def test_report_page_in_chromium(tmp_path, browser):
    study = make_study(NAMES)
    for k, p in enumerate(study.pairs):  # some intervals contain 0, some do not
        p.loss_ci = (p.loss - 0.4 - 0.3 * (k % 4), p.loss + 0.4 + 0.3 * (k % 4))
    out = tmp_path / "report"
    write_reports(study, out)
    dt = browser
    dt.send("Page.navigate", url=(out / "report.html").as_uri())
    dt.wait_event("Page.loadEventFired")

    figures = _eval(
        dt,
        "Promise.all(Array.from(document.images).map(i => i.decode().then("
        "() => [i.alt, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width],"
        "e => [i.alt, 'not decoded: ' + e])))",
    )
    assert len(figures) == 4, figures  # forest, loss, agreement, CKA
    for alt, w, h, shown_w in figures:
        assert isinstance(w, int) and w > 300 and h > 200 and shown_w > 100, (alt, w, h)
    header = _eval(dt, "document.querySelector('header').innerText")
    for m in study.models:
        assert m.name in header and m.sha256 in header
    assert "n_boot" in header

    # sort the intervals table by its Loss column, then reverse it
    rows = "Array.from(document.querySelectorAll('#intervals tbody tr'))"
    col = rows + ".map(r => r.cells[1].textContent)"
    click = "document.querySelectorAll('#intervals thead th')[1].click()"
    _eval(dt, click)
    ascending = [float(x) for x in _eval(dt, col)]
    assert ascending == sorted(p.loss for p in study.pairs)
    _eval(dt, click)
    assert [float(x) for x in _eval(dt, col)] == ascending[::-1]
    assert (
        _eval(dt, "document.querySelectorAll('#intervals thead th')[1].getAttribute('aria-sort')")
        == "descending"
    )

    requested = [
        e["params"]["request"]["url"]
        for e in dt.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested
    assert _errors(dt.events) == []

    size = dt.send("Page.getLayoutMetrics")["cssContentSize"]
    shot = dt.send(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    )
    png = base64.b64decode(shot["data"])
    (tmp_path / "page.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 50_000


def test_console_errors_are_seen(tmp_path, browser):
    """The check above can fail: a page with a script error and a missing image is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png" alt="x">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    browser.send("Page.navigate", url=page.as_uri())
    browser.wait_event("Page.loadEventFired")
    assert len(_errors(browser.events)) >= 2
    decoded = _eval(browser, "document.images[0].decode().then(() => true, () => false)")
    assert decoded is False
