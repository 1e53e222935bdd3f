"""Open a local HTML file in headless Chromium over the DevTools pipe and report what the page did.

Why the pipe (``--remote-debugging-pipe``) rather than ``--dump-dom`` plus stderr logs: the DevTools
protocol reports console messages, uncaught exceptions, browser log entries (failed loads, CSP
violations) and every network request as structured events, so the test need not grep log lines whose
format changes between Chromium releases. The protocol is JSON messages separated by NUL bytes on
file descriptors 3 (to the browser) and 4 (from it).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    path = os.environ.get("TASB_RAY_CHROMIUM", CHROMIUM)
    return path if os.path.exists(path) else shutil.which("chromium")


@dataclass
class PageVisit:
    """What one page load produced.

    Args:
        html: ``document.documentElement.outerHTML`` after load.
        console: console messages as ``(level, text)``.
        errors: uncaught exceptions, console errors and browser log entries of level error.
        requests: URLs the page requested (the page itself included).
        probe: the JSON value of the probe expression evaluated after load.
    """

    html: str
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    probe: object = None


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int):
        self.w, self.r = write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read_one(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        msg_id = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, session: str, timeout: float = 30.0) -> dict:
        for i, msg in enumerate(self.events):
            if msg.get("method") == method and msg.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg.get("method") == method and msg.get("sessionId") == session:
                return msg
            self.events.append(msg)


def visit(path: str | os.PathLike, probe: str = "null", timeout: float = 60.0) -> PageVisit:
    """Load ``path`` (a local file) in a fresh headless Chromium profile and collect what happened.

    Args:
        path: the HTML file.
        probe: a JavaScript expression evaluated after load; its JSON value is returned as ``probe``.
        timeout: seconds for each protocol step.
    """
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium not found")
    url = Path(path).resolve().as_uri()
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="tasb-chromium-")

    # Move the child's ends above 4 first, so placing them on 3 and 4 cannot overwrite one another;
    # posix_spawn's dup2 actions do the placing without running Python in the forked child.
    child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    for fd in (to_browser_r, from_browser_w):
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2),
               (os.POSIX_SPAWN_DUP2, child_r, 3), (os.POSIX_SPAWN_DUP2, child_w, 4)]
    try:
        pid = os.posix_spawn(exe, [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"], os.environ,
                             file_actions=actions)
    finally:
        for fd in (child_r, child_w, devnull):
            os.close(fd)
    pipe = _Pipe(to_browser_w, from_browser_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                            timeout=timeout)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session, timeout=timeout)
        pipe.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
        pipe.wait_event("Page.loadEventFired", session, timeout=timeout)
        html = pipe.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                              "returnByValue": True}, session=session,
                         timeout=timeout)["result"]["value"]
        probed = pipe.call("Runtime.evaluate", {"expression": f"JSON.stringify({probe})", "returnByValue": True},
                           session=session, timeout=timeout)
        if "exceptionDetails" in probed:
            raise RuntimeError(f"probe failed: {probed['exceptionDetails']}")
        probe_value = json.loads(probed["result"]["value"])
        # A round trip after load flushes events the page produced while loading.
        pipe.call("Runtime.evaluate", {"expression": "1"}, session=session, timeout=timeout)
        out = PageVisit(html=html, probe=probe_value)
        for msg in pipe.events:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                out.console.append((params.get("type", ""), text))
                if params.get("type") in ("error", "assert"):
                    out.errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                out.errors.append(f"exception: {text}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                out.console.append((entry.get("level", ""), entry.get("text", "")))
                if entry.get("level") == "error":
                    out.errors.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                out.requests.append(params.get("request", {}).get("url", ""))
        try:
            pipe.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
        return out
    finally:
        os.close(to_browser_w)
        os.close(from_browser_r)
        _reap(pid, timeout=15)
        shutil.rmtree(profile, ignore_errors=True)


def _reap(pid: int, timeout: float) -> None:
    """Wait for the browser to exit (closing the pipe asks it to), killing it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
