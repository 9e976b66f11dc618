"""A loopback HTTP server standing in for the WhatsApp Cloud API and an SMS gateway: it keeps
every request (path, headers, JSON body) and answers as they do."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class FakeProvider:
    """Real HTTP on 127.0.0.1; `requests` holds what was received; `fail` makes it answer 500."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(n) or b"null")
                fake.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if fake.fail else 200
                reply = ({"error": {"message": "boom"}} if fake.fail else
                         {"messaging_product": "whatsapp", "messages": [{"id": "wamid.TEST"}]})
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
