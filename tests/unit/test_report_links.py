"""Report links across ports (#29): the bases links were made with are remembered, and the
redirect sends an old link to the port the reports UI runs on now (the browser test follows
one end to end)."""

from __future__ import annotations

import http.client
import threading
from http.server import ThreadingHTTPServer

from mlops_assets.lib.reporting.report_store import LINKS_FILE, ReportStore
from mlops_assets.platform.procs import free_port
from mlops_assets.platform.redirect import handler_for


def test_every_link_base_is_remembered_once_in_order_and_damage_is_survived(tmp_path):
    for base in ("http://127.0.0.1:8000", "http://127.0.0.1:8333", "http://127.0.0.1:8000"):
        store = ReportStore(tmp_path, base)
        store.root.mkdir(parents=True, exist_ok=True)
        store._remember_link_base()
    assert store.link_bases() == ["http://127.0.0.1:8000", "http://127.0.0.1:8333"]
    (tmp_path / LINKS_FILE).write_text("[torn")
    assert store.link_bases() == []


def test_an_old_link_is_redirected_with_its_path_and_method():
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for("http://127.0.0.1:8333/"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for method in ("GET", "HEAD"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, "/projects/p1/reports/r2?tab=metrics")
            answer = conn.getresponse()
            assert answer.status == 307
            assert answer.getheader("Location") == \
                "http://127.0.0.1:8333/projects/p1/reports/r2?tab=metrics"
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
