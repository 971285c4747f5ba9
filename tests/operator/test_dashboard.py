"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a 3-node cluster.

Loads the page from node 1, checks the leader is marked, creates a topic through
the API and waits for it in the table, adds a fourth node to the quorum and waits
for its card, removes it and waits for the card to go (the page follows membership
changes), kills the leader and waits for
the page to show it down and another node marked leader. Screenshots are kept as test
artifacts in ``test-artifacts/`` (and ``--update-screenshot`` is not needed: the
README's copy under ``docs/`` is refreshed by setting PYRAFT_SCREENSHOT_DOCS=1).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pyraft.localcluster import LocalCluster

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SHOT = ROOT / "docs" / "dashboard.png"

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright driver is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (scripts/test.sh installs Debian's chromium)", allow_module_level=True
    )


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    """POST a create, repeated while it answers 503: an election on a loaded machine is no
    failure of the dashboard, and repeating an identical create is safe (README: 200 on a repeat)."""
    deadline = time.monotonic() + 15
    while True:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer: dict[str, object] = json.load(response)
                return answer
        except urllib.error.HTTPError as exc:  # say what the node answered, not just its status
            if exc.code != 503 or time.monotonic() > deadline:
                raise AssertionError(f"POST {url} answered {exc.code}: {exc.read()!r}") from None
        time.sleep(0.1)


# One snapshot of what the page shows about the leader: the marker, that node's card, the text.
LEADER_SHOWN = """() => {
  const marker = document.querySelector("#leader");
  const id = marker && marker.getAttribute("data-leader-id");
  const card = id && document.querySelector(`.node[data-node-id="${id}"]`);
  return {id, text: marker ? marker.innerText : "", role: card ? card.getAttribute("data-role") : null};
}"""


def shown_leader(page: Any, cluster: LocalCluster) -> int:
    """The leader the page marks, once it is the one the cluster agrees on and the page shows it
    consistently (marker, text and card read together: the page may be mid-update)."""
    deadline = time.monotonic() + 10
    while True:
        shown = page.evaluate(LEADER_SHOWN)
        agreed = cluster.leader()
        marked = shown["id"]
        consistent = shown["role"] == "leader" and f"node {marked}" in shown["text"]
        if marked and agreed == int(marked) and consistent:
            return agreed
        assert time.monotonic() < deadline, f"page shows {shown}, cluster says {agreed}"
        time.sleep(0.05)


def test_dashboard_shows_the_quorum_live(live_cluster: LocalCluster) -> None:
    c = live_cluster
    base = f"http://127.0.0.1:{c.nodes[1].http_port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(base + "/")
            leader = shown_leader(page, c)

            post(
                base + "/register_broker/",
                {"brokerId": 1, "brokerHost": "kafka-1", "brokerPort": 9092, "securityProtocol": "PLAINTEXT"},
            )
            post(base + "/register_topic/", {"name": "orders"})
            page.wait_for_selector("#topics td:text-is('orders')", timeout=5000)
            page.wait_for_selector("#events li", timeout=5000)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            if os.environ.get("PYRAFT_SCREENSHOT_DOCS"):
                DOCS_SHOT.parent.mkdir(exist_ok=True)
                shutil.copy(ARTIFACTS / "dashboard.png", DOCS_SHOT)

            joiner = c.add_node(4)
            c.start(4)
            c.wait_for("node 4 to serve", joiner.status)
            answer = c.nodes[1].call("POST", "/quorum/voters", {"id": 4, "address": joiner.raft_address}, 30)
            assert answer[0] == 201, answer
            added = '.node[data-node-id="4"][data-member="voter"][data-state="up"]'
            page.wait_for_selector(added, timeout=5000)
            answer = c.nodes[1].call("DELETE", "/quorum/voters/4", timeout=30)
            assert answer[0] == 200, answer
            page.wait_for_selector('.node[data-node-id="4"]', state="detached", timeout=5000)
            c.kill(4)

            leader = shown_leader(page, c)  # elections may have happened meanwhile on a busy machine
            c.kill(leader)
            page.wait_for_selector(f'.node[data-node-id="{leader}"][data-state="down"]', timeout=1500)
            new = page.wait_for_selector(
                f'.node[data-role="leader"]:not([data-node-id="{leader}"])', timeout=10000
            )
            assert new is not None
            page.screenshot(path=str(ARTIFACTS / "dashboard-after-failover.png"), full_page=True)
        finally:
            browser.close()
