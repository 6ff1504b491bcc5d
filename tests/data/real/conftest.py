"""A local HTTP server for the fetch tests: serves a folder on 127.0.0.1, honours ``Range``, and can cut a
connection part-way through a file, as a flaky real server would."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.cut_after: dict[str, int] = {}   # file name -> bytes sent before the next response is cut
        self.ranges_honoured = True
        self.content_type = "application/octet-stream"
        self.requests: list[tuple[str, str | None]] = []   # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, self.headers.get("Range")))
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and server.ranges_honoured:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return
                chunk = data[start:]
                cut = server.cut_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def file_url(self, name: str) -> str:
        return f"{self.url}/{name}"


@pytest.fixture
def http_server(tmp_path):
    """A server for ``tmp_path / "served"``; put files there, read ``.requests``, set ``.cut_after[name]``."""
    root = tmp_path / "served"
    root.mkdir()
    s = Server(root)
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
