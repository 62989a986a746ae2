"""Headless Chromium driven over the DevTools protocol on a pipe: no port, no driver, no extra package.

`Chromium()` starts the browser with `--remote-debugging-pipe`: the browser
reads protocol commands from its file descriptor 3 and writes answers and
events to descriptor 4, each a JSON message ended by a NUL byte. One reader
thread splits that stream; `Page` sends commands to one tab (a flattened
session) and waits for their answers. That is all `export --web`'s tests,
the screenshot and `bench --on browser` need: open a URL, evaluate
JavaScript (awaiting promises), dispatch mouse and touch input, take a
screenshot.

Chromium runs as it must on a machine without a display or a network:
headless, no GPU, no sandbox (it runs as root in CI), none of its background
connections (updates, sync, safe browsing: they only fail here), a fresh
profile in a temporary directory removed at the end.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import LenetEdgeError

# Where Debian, Ubuntu, Fedora and Google's packages put the browser, in the order tried.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-pipe",
)
INSTALL_HINT = "install it (Debian/Ubuntu: `apt-get install chromium`) or name it with --chromium PATH"


class BrowserError(LenetEdgeError):
    """Chromium is missing, would not start, or a page failed; the message says which and what to do."""


def find_chromium(path: str | os.PathLike | None = None) -> Path:
    """The Chromium executable: `path` if given, else the first of `CANDIDATES` on PATH.

    Raises:
        BrowserError: not found (says how to install it), or `path` is not an executable file.
    """
    if path is not None:
        path = Path(path)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrowserError(f"{path}: no Chromium executable there; {INSTALL_HINT}")
        return path
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise BrowserError(f"no Chromium found (looked for {', '.join(CANDIDATES)} on PATH); {INSTALL_HINT}")


class Chromium:
    """One headless Chromium process and its DevTools pipe; use as a context manager.

    Args:
        executable: the browser (see `find_chromium`); None: found on PATH.
        window: the viewport, (width, height) in CSS pixels.
        timeout: seconds any one protocol command may take (evaluations included).
    """

    def __init__(self, executable: str | os.PathLike | None = None, window=(900, 700), timeout: float = 120.0):
        self.executable = find_chromium(executable)
        self.window, self.timeout = window, timeout
        self._next_id = 0
        self._pending: dict[int, queue.Queue] = {}
        self._events: dict[str | None, queue.Queue] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.pid = None

    # --- process ------------------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        self.profile = Path(tempfile.mkdtemp(prefix="lenet-edge-chromium-"))
        self.log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 (closed in __exit__)
        # Our ends of two pipes; the browser's ends become its fds 3 (commands in) and 4 (messages out).
        commands_in, self._commands = os.pipe()
        self._messages, messages_out = os.pipe()
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_in, messages_out)]
        for fd in (commands_in, messages_out):
            os.close(fd)
        for fd in (self._commands, self._messages):
            os.set_inheritable(fd, False)
        argv = [
            str(self.executable),
            *FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={self.window[0]},{self.window[1]}",
            "about:blank",
        ]
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            # posix_spawn, not subprocess: the pipes must land on fds 3 and 4, and a preexec_fn that
            # moves them is unsafe while other threads run (bench's ssh sessions may be).
            self.pid = os.posix_spawn(
                argv[0],
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, self.log.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, self.log.fileno(), 2),
                    (os.POSIX_SPAWN_DUP2, theirs[0], 3),
                    (os.POSIX_SPAWN_DUP2, theirs[1], 4),
                ],
                setsid=True,  # its own process group: Ctrl-C reaches us, and we stop the whole browser
            )
        except OSError as exc:
            self._cleanup()
            raise BrowserError(f"{self.executable}: cannot start Chromium ({exc.strerror or exc})") from None
        finally:
            os.close(devnull)
            for fd in theirs:
                os.close(fd)
        self._reader = threading.Thread(target=self._read, name="chromium-pipe", daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=60)
        except BrowserError:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.pid is not None and not self._closed.is_set():
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=5)
        self._stop()
        self._cleanup()

    def _stop(self) -> None:
        if self.pid is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        with contextlib.suppress(ProcessLookupError):  # renderer and helper processes left in its group
            os.killpg(self.pid, signal.SIGKILL)
        self.pid = None

    def _cleanup(self) -> None:
        for fd in (self._commands, self._messages):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, lines: int = 3) -> str:
        """The last lines Chromium printed (its stderr), for an error message."""
        try:
            text = (self.profile / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    # --- protocol -----------------------------------------------------------------------------------

    def _read(self) -> None:
        """Split the browser's stream into messages: answers to their waiting command, events to their session."""
        buffer = b""
        try:
            while True:
                chunk = os.read(self._messages, 1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._lock:
                            waiting = self._pending.pop(message["id"], None)
                        if waiting is not None:
                            waiting.put(message)
                    else:
                        self._event_queue(message.get("sessionId")).put(message)
        except OSError:
            pass
        finally:
            self._closed.set()
            with self._lock:
                for waiting in self._pending.values():
                    waiting.put(None)
                self._pending.clear()

    def _event_queue(self, session: str | None) -> queue.Queue:
        with self._lock:
            return self._events.setdefault(session, queue.Queue())

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=None) -> dict:
        """Send one command and wait for its result.

        Raises:
            BrowserError: the browser answered with an error, went away, or took longer than `timeout`.
        """
        if self._closed.is_set():
            raise BrowserError(f"Chromium has exited ({self.log_tail() or 'no message'})")
        answer: queue.Queue = queue.Queue()
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            self._pending[message_id] = answer
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._commands, view) :]
        except OSError:
            raise BrowserError(f"Chromium has exited ({self.log_tail() or 'no message'})") from None
        try:
            reply = answer.get(timeout=timeout or self.timeout)
        except queue.Empty:
            with self._lock:
                self._pending.pop(message_id, None)
            raise BrowserError(f"Chromium did not answer {method} within {timeout or self.timeout:g} s") from None
        if reply is None:
            raise BrowserError(f"Chromium exited during {method} ({self.log_tail() or 'no message'})")
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply.get("result", {})

    def wait_event(self, session: str | None, method: str, timeout: float) -> dict:
        """The next event `method` of `session` (others before it are dropped)."""
        events = self._event_queue(session)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} within {timeout:g} s")
            try:
                event = events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self._closed.is_set():
                    raise BrowserError(f"Chromium exited ({self.log_tail() or 'no message'})") from None
                continue
            if event.get("method") == method:
                return event.get("params", {})

    @contextlib.contextmanager
    def page(self) -> Iterator[Page]:
        """A new tab, closed afterwards."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        try:
            page.send("Page.enable")
            page.send("Runtime.enable")
            yield page
        finally:
            with contextlib.suppress(BrowserError):
                self.send("Target.closeTarget", {"targetId": target}, timeout=10)


class Page:
    """One tab: navigate, evaluate, input, screenshot."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session
        self.errors: list[str] = []  # uncaught exceptions and console errors, collected by `evaluate`

    def send(self, method: str, params: dict | None = None, timeout=None) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str, timeout: float = 60.0) -> None:
        """Load `url` and wait for its load event."""
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.browser.wait_event(self.session, "Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression; a promise is awaited.

        Raises:
            BrowserError: the expression threw (its message, as the page saw it).
        """
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True},
            timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text") or "exception"
            raise BrowserError(f"in the page: {text.splitlines()[0]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Evaluate `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"the page never satisfied `{expression}` within {timeout:g} s")
            time.sleep(interval)

    def mouse(self, kind: str, x: float, y: float, buttons: int = 1) -> None:
        """One mouse event at viewport (x, y): kind is mousePressed, mouseMoved or mouseReleased."""
        params = {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}
        self.send("Input.dispatchMouseEvent", params)

    def stroke(self, points: list[tuple[float, float]], touch: bool = False) -> None:
        """Draw through `points` (viewport pixels) with the mouse button held, or one finger."""
        if touch:
            self.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [_touch(points[0])]})
            for point in points[1:]:
                self.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [_touch(point)]})
            self.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
            return
        self.mouse("mouseMoved", *points[0], buttons=0)
        self.mouse("mousePressed", *points[0])
        for point in points[1:]:
            self.mouse("mouseMoved", *point)
        self.mouse("mouseReleased", *points[-1], buttons=0)

    def viewport(self, width: int, height: int) -> None:
        """Make the page's viewport exactly `width` x `height` CSS pixels (a screenshot's size)."""
        params = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", params)

    def screenshot(self) -> bytes:
        """The viewport as PNG bytes."""
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])


def _touch(point: tuple[float, float]) -> dict:
    return {"x": point[0], "y": point[1], "radiusX": 2, "radiusY": 2, "force": 1, "id": 0}
