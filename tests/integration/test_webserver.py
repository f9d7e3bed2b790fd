"""The Dagster webserver loads the project's workspace and shows every asset and check."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from mlops_assets.config import PROJECT_ROOT
from mlops_assets.definitions import defs
from mlops_assets.orchestration import ensure_dagster_home
from mlops_assets.platform.procs import free_port, server, stop

pytestmark = pytest.mark.integration

QUERY = """
{ assetNodes { assetKey { path } groupName description kinds
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    assert "errors" not in body, body
    return body["data"]


def test_webserver_shows_every_asset_and_check(tmp_path):
    home = tmp_path / "home"
    dagster_home = ensure_dagster_home(home / "dagster")
    port = free_port()
    webserver = Path(sys.executable).parent / "dagster-webserver"
    cmd = [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    env = {"DAGSTER_HOME": str(dagster_home), "MLOPS_HOME": str(home)}
    with server(cmd, f"http://127.0.0.1:{port}/server_info", tmp_path / "web.log", env,
                PROJECT_ROOT, timeout=120) as proc:
        assert proc.poll() is None
        nodes = graphql(port, QUERY)["assetNodes"]
        exit_code = stop(proc)  # SIGTERM by PID
    graph = defs.resolve_asset_graph()
    expected_assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    expected_checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    found_assets = {"/".join(n["assetKey"]["path"]) for n in nodes}
    found_checks = {
        f"{'/'.join(n['assetKey']['path'])}:{c['name']}"
        for n in nodes for c in n["assetChecksOrError"]["checks"]
    }
    assert found_assets == expected_assets
    assert found_checks == expected_checks
    assert len(expected_assets) >= 10 and len(expected_checks) >= 8
    # Look and feel: every asset has a description, a stage group and kinds.
    for n in nodes:
        assert n["description"] and n["groupName"] != "default" and n["kinds"], n
    assert exit_code == 0  # a graceful exit on SIGTERM, no SIGKILL needed
