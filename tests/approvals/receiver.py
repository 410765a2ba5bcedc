"""A webhook receiver for tests, on 127.0.0.1: records what it is sent, and can fail or hang."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str = ""
    #: "ok" | "fail" (HTTP 500) | "hang" (sleeps `hang_s` before answering) | "bad_request" (400)
    mode: str = "ok"
    #: answer 500 this many times first, then behave as `mode`
    fail_first: int = 0
    hang_s: float = 30.0
    hits: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} notifications, got {len(self.received)}")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with receiver.lock:
                receiver.hits += 1
                failing = receiver.fail_first > 0
                if failing:
                    receiver.fail_first -= 1
            if receiver.mode == "hang" and not failing:
                time.sleep(receiver.hang_s)
            status = 500 if failing or receiver.mode == "fail" else 400 if receiver.mode == "bad_request" else 200
            if status == 200:
                with receiver.lock:
                    receiver.received.append(json.loads(body))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/T000/B000/secret"
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
