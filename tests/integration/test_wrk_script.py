"""The benchmark's wrk script against the real wrk: ``percentile_ms`` over the latencies it
dumps gives wrk's own p50/p99. ``benchmarks.run`` merges its saturation slices this way.

wrk's latency statistics hold more samples than requests: after a run it adds synthetic ones
for coordinated omission (``stats_correct``), and its percentiles count them, so the dump
must carry them too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.run import LUA_COMMON, percentile_ms, run_wrk

pytestmark = pytest.mark.integration


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered, flushed once per request: head and body in separate segments would wait out
    # delayed ACKs (~40 ms a request).
    wbufsize = -1

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk drops its connections mid-request when its time is up


@pytest.fixture
def server() -> Iterator[str]:
    httpd = _Server(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_dumped_latencies_reproduce_wrks_percentiles(server: str, tmp_path: Path) -> None:
    script = tmp_path / "common.lua"
    script.write_text(LUA_COMMON)
    result = run_wrk(server, script, connections=4, duration=1, threads=1, histogram=True)
    histogram = result["histogram"]
    assert result["requests"] > 100
    assert sum(count for _, count in histogram) >= result["requests"]
    assert len({value for value, _ in histogram}) == len(histogram) > 10
    assert percentile_ms(histogram, 50) == result["p50_ms"]
    assert percentile_ms(histogram, 99) == result["p99_ms"]


def test_the_histogram_is_only_parsed_when_asked(server: str, tmp_path: Path) -> None:
    script = tmp_path / "common.lua"
    script.write_text(LUA_COMMON)
    assert "histogram" not in run_wrk(server, script, connections=2, duration=1, threads=1)
