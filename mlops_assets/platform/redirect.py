"""A redirect from a reports port links were made with to the port the reports UI runs on
now: a report's link in the Dagster UI is fixed when the report is made
(``http://127.0.0.1:8000/projects/...``), so `mlops-assets ui --reports-port 8333` starts one
of these on 8000 (and on every other port older links name), and such a link still opens.
Run: python -m mlops_assets.platform.redirect HOST PORT TARGET_URL."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler_for(target: str) -> type[BaseHTTPRequestHandler]:
    target = target.rstrip("/")

    class Redirect(BaseHTTPRequestHandler):
        def _redirect(self) -> None:
            self.send_response(307)  # same method, same body: a GET stays a GET
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = _redirect

        def log_message(self, *args) -> None:
            pass

    return Redirect


def main(argv: list[str]) -> int:
    host, port, target = argv[0], int(argv[1]), argv[2]
    ThreadingHTTPServer((host, port), handler_for(target)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
