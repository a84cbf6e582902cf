"""`down`'s waits (amtp_obs.accounting.drain): the collector scraped, then the rules caught up.

The end-to-end proof is tests/e2e/test_accounting_churn.py (restarts right after processes exit
lose nothing); these pin the arithmetic of the rules' read point, on groups as Prometheus'
/api/v1/rules shows them, and the scrape wait against the real Prometheus scraping a page.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from amtp_obs import contract
from amtp_obs.accounting import drain
from amtp_obs.net import LOOPBACK, free_port
from amtp_obs.testing.poll import eventually
from amtp_obs.testing.prometheus import Prom, run_prometheus

T = 1_800_000_000.0  # a recent Unix time


def _group(interval: float, queries: list[str], last: float | None = T) -> dict[str, object]:
    when = "0001-01-01T00:00:00Z" if last is None else datetime.fromtimestamp(last, UTC).isoformat()
    return {"interval": interval, "lastEvaluation": when, "rules": [{"query": q} for q in queries]}


def test_read_point_is_the_last_complete_evaluation_minus_the_read_delay() -> None:
    group = _group(5, ["sum(x offset 5s)", "sum(y offset 15s)"])
    assert drain._read_delay(group) == 5.0  # the smallest offset its rules read with
    # lastEvaluation may be an evaluation under way: only the one an interval earlier surely finished.
    assert drain.read_point(group) == T - 5 - 5


def test_a_recorded_sample_tells_the_evaluation_time_exactly() -> None:
    group = _group(5, ["sum(x offset 5s)"])
    assert drain.read_point(group, recorded=T - 1) == T - 1 - 5
    # A sample newer than lastEvaluation may come from the evaluation under way: not trusted.
    assert drain.read_point(group, recorded=T + 1) == T - 5 - 5
    # An older sample than one interval back changes nothing.
    assert drain.read_point(group, recorded=T - 60) == T - 5 - 5


def test_no_evaluation_yet_and_bad_groups_have_no_read_point() -> None:
    assert drain.read_point(_group(5, ["x"], last=None)) is None
    assert drain.read_point({"interval": "not a number", "lastEvaluation": "x"}) is None
    assert drain._read_delay(_group(5, ["sum(x)"])) == 0.0  # no offset: reads as it goes


# -- the collector scraped before it stops (wait_until_scraped), against the real Prometheus --------


class Page(ThreadingHTTPServer):
    """An exporter page on loopback whose text the test sets: what a collector's exporter holds."""

    text = ""


class _PageHandler(BaseHTTPRequestHandler):
    server: Page

    def do_GET(self) -> None:
        body = self.server.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page() -> Iterator[Page]:
    server = Page((LOOPBACK, free_port()), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


PROMPT = contract.PROMPT_TOKENS.prometheus_name

SCRAPE_S = 3
"""Long enough that a call lands between two scrapes, short enough for a test."""


@pytest.fixture
def prom(tmp_path: Path, page: Page) -> Iterator[Prom]:
    job = {"job_name": "collector", "static_configs": [{"targets": [f"{LOOPBACK}:{page.server_port}"]}]}
    with run_prometheus(tmp_path / "prom", scrape_configs=[job], interval=f"{SCRAPE_S}s") as p:
        yield p


def _exporter(page: Page) -> str:
    return f"http://{LOOPBACK}:{page.server_port}/metrics"


def _latest(prom: Prom, metric: str) -> float | None:
    r = httpx.get(f"{prom.url}/api/v1/query", params={"query": metric}, timeout=5)
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.needs("prometheus")
def test_a_value_the_exporter_holds_is_in_prometheus_when_the_wait_ends(prom: Prom, page: Page) -> None:
    page.text = f"{PROMPT} 100\n"
    assert eventually(lambda: _latest(prom, PROMPT) == 100, 4 * SCRAPE_S)
    # A process exported more and exited: the page moved, Prometheus has not scraped it yet.
    page.text = f"{PROMPT} 160\n"
    assert _latest(prom, PROMPT) == 100
    said = drain.wait_until_scraped(prom.url, _exporter(page))
    assert said.startswith("scraped what the collector holds"), said
    assert _latest(prom, PROMPT) == 160


@pytest.mark.needs("prometheus")
def test_an_empty_page_or_an_unscraped_exporter_is_not_waited_for(prom: Prom, page: Page, tmp_path: Path) -> None:
    page.text = "# HELP nothing yet\n"
    assert drain.wait_until_scraped(prom.url, _exporter(page)) == "nothing to scrape"
    page.text = f"{PROMPT} 1\n"
    other = f"http://{LOOPBACK}:{free_port()}/metrics"  # a page nothing scrapes (and nobody serves)
    assert drain.wait_until_scraped(prom.url, other).startswith("not waited for: the collector's exporter")
    # The page is there but Prometheus has another target only: no wait, and it says why.
    assert drain.wait_until_scraped(prom.url, _exporter(page).replace("/metrics", "/other")).startswith(
        "not waited for: no Prometheus target"
    )


@pytest.mark.needs("prometheus")
def test_a_failing_scrape_ends_the_wait_and_says_so(prom: Prom, page: Page) -> None:
    page.text = f"{PROMPT}{{ not a label set\n"
    said = drain.wait_until_scraped(prom.url, _exporter(page))
    assert said.startswith("scraped, but the scrape failed"), said


def test_the_target_is_found_by_port_and_path_whatever_the_host() -> None:
    targets = [
        {"scrapeUrl": "http://127.0.0.1:9090/metrics", "health": "up"},
        {"scrapeUrl": "http://otel-collector:8889/metrics", "health": "up"},
    ]
    assert drain.scrape_target(targets, "http://localhost:8889/metrics") is targets[1]
    assert drain.scrape_target(targets, "http://localhost:8889/other") is None
    assert drain.scraped_since({"lastScrape": "2027-01-15T08:00:01.123456789Z"}, 1_800_000_000.0) is True
    assert drain.scraped_since({"lastScrape": "0001-01-01T00:00:00Z"}, 1_800_000_000.0) is False
    assert drain.scraped_since({}, 0.0) is None
