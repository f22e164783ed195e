"""The CLI's port probe and ``/health`` reader, on real sockets, and what ``serve`` says when the port is taken."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from edge_run.cli import main
from edge_run.cli.common import browse_host, edge_run_health, listening
from edge_run.paths import Paths


class _NotEdgeRun(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>some other program</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_program() -> Iterator[int]:
    """The port of an HTTP server that is not edge-run."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEdgeRun)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("host", "shown"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("mybox", "mybox")],
)
def test_browse_host_is_an_address_a_local_browser_can_open(host: str, shown: str):
    assert browse_host(host) == shown


def test_listening_tells_a_held_port_from_a_free_one(other_program: int):
    assert listening("127.0.0.1", other_program)
    assert listening("0.0.0.0", other_program)  # a server bound to every address answers on loopback
    assert not listening("127.0.0.1", _closed_port())


def test_health_of_another_program_or_of_nothing_is_none(other_program: int):
    assert edge_run_health("127.0.0.1", other_program) is None
    assert edge_run_health("127.0.0.1", _closed_port()) is None


def test_serve_on_a_port_another_program_holds_is_a_usage_error(other_program: int, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RUN_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["serve", "--port", str(other_program)])
    assert result.exit_code == 2, result.output
    assert f"port {other_program} is in use by another program; pick another with --port." in result.output
    assert not Paths.resolve().keys_db.exists()  # refused before a first key was made and shown


def test_the_command_line_loads_neither_the_server_nor_llama_cpp():
    """``edge-run keys ...`` and ``--help`` answer at once: the heavy imports wait for the command that needs them."""
    code = "import sys, edge_run.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('litestar', 'llama_cpp', 'uvicorn') or m == 'edge_run.server'))"  # noqa: E501
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
