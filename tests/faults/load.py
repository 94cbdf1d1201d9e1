"""Load and measurement for the fault suite: wrk with every answer counted, a sequential prober,
a recording proxy between the relay and the ingest function, and CPU time read from /proc.

A phase runs load for a fixed time while faults are injected at fixed offsets; what the phase
returns are counts (per status and error code), never latencies: the suite asserts on counts and
prints them as the figures of docs/serving.md and docs/cdc.md.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import AUTH_HEADERS, TEST_KEY

LUA = str(Path(__file__).resolve().parent / "statuses.lua")


def wrk(url: str, concurrency: int, seconds: float, ids_from: int, ids_span: int) -> dict[str, Any]:
    """Statuses of every answer of a wrk run against read_features for cached users."""
    env = {**os.environ, "IDS_FROM": str(ids_from), "IDS_SPAN": str(ids_span), "API_KEY": TEST_KEY}
    out = subprocess.run(["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{int(seconds)}s",
                          "--timeout", "10s", "-s", LUA, url], env=env, capture_output=True, text=True,
                         check=True).stdout
    return dict(json.loads(next(line for line in out.splitlines() if line.startswith("{"))))


def get(url: str, timeout: float = 15.0) -> tuple[str, dict[str, Any]]:
    """``status`` or ``status:error_code`` of one GET, and its JSON body; a socket failure is ``socket``."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH_HEADERS), timeout=timeout) as resp:
            return str(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        return f"{exc.code}:{body.get('error', {}).get('code', '?')}", body
    except OSError:
        return "socket", {}


class Prober:
    """One client asking for users never asked before (cache misses), one at a time, counting answers."""

    def __init__(self, base_url: str, first_id: int, interval_s: float = 0.05) -> None:
        self.base_url, self.next_id, self.interval_s = base_url, first_id, interval_s
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _ = get(f"{self.base_url}/api/v1/features/user/u{self.next_id:09d}")
            self.answers.append((time.monotonic(), status))
            self.next_id += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(s for t, s in self.answers if since <= t <= until)


def phase(load: Callable[[], dict[str, Any]], faults: Sequence[tuple[float, Callable[[], None]]]) -> dict[str, Any]:
    """Run ``load`` (blocking, e.g. one wrk run) while calling each fault at its offset in seconds."""
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(load()))
    started = time.monotonic()
    worker.start()
    for at, action in faults:
        time.sleep(max(0.0, started + at - time.monotonic()))
        action()
    worker.join()
    return result


# --- the relay's deliveries ----------------------------------------------------------------------


class RecordingProxy:
    """Stands between the relay and ingest_changes: forwards each push, answers with the function's
    status (502 when it cannot be reached) and records every acknowledged message."""

    def __init__(self, port: int, target_port: int) -> None:
        self.acked: Counter[str] = Counter()  # message id (the change's LSN) -> acknowledged deliveries
        self.commit_lsn: dict[str, int] = {}  # message id -> its transaction's commit LSN
        self.rows: dict[str, str] = {}  # message id -> "table:key" of the row it carries
        self.refused = 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower().startswith("ce-") or
                           k.lower() == "content-type"}
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                    conn.request("POST", "/", body, headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                    conn.close()
                except (OSError, http.client.HTTPException):
                    status = 502
                if 200 <= status < 300:
                    message = json.loads(body)["message"]
                    event = json.loads(base64.b64decode(message["data"]))
                    payload = event.get("payload", event)
                    row = payload["after"] or payload["before"]
                    key = row.get("transaction_id") or row.get("user_id")
                    with lock:
                        proxy.acked[message["messageId"]] += 1
                        proxy.commit_lsn[message["messageId"]] = int(json.loads(payload["source"]["sequence"])[0])
                        proxy.rows[message["messageId"]] = f"{payload['source']['table']}:{payload['op']}:{key}"
                else:
                    with lock:
                        proxy.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def duplicates(self) -> dict[str, int]:
        return {m: n for m, n in self.acked.items() if n > 1}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- CPU ----------------------------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time so far of these processes (those that exist)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def core_share(pids: Callable[[], Sequence[int]], seconds: float) -> float:
    """Share of one core these processes used over ``seconds`` of wall time."""
    watched = list(pids())
    before, started = cpu_seconds(watched), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(watched) - before) / (time.monotonic() - started)
