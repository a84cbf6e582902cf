"""The trace store goes away behind the collector.

* Back inside the exporter's retry window: nothing is lost.
* Down past ``max_elapsed_time``: the collector drops the data and counts it in its self-metric
  ``otelcol_exporter_send_failed_spans`` (and keeps serving).
* ``kill -9`` mid-ingest: after a restart on the same WAL, every span the collector acknowledged to
  the client is in the store (WAL for what the store had acknowledged, the collector's retries for
  the rest).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import httpx

import harness
from amtp_obs.collector.telemetry import EXPORTER_SEND_FAILED, EXPORTER_SENT, metric_name
from conftest import start

SPANS_PER_REQUEST = 16
SPANS_PER_TRACE = 4
SEND_FAILED = metric_name(EXPORTER_SEND_FAILED, "spans") + "_total"
SENT = metric_name(EXPORTER_SENT, "spans") + "_total"


def _retries(coll: harness.Proc) -> int:
    """Failed export attempts the collector logged as retries (exporter_otlp's wording)."""
    return coll.log.read_text(errors="replace").count("exporting failed, will retry in")


def _requests(seed: int, n: int) -> list[bytes]:
    return [
        harness.build_request(seed + i, 0, SPANS_PER_REQUEST, SPANS_PER_TRACE)[0].SerializeToString() for i in range(n)
    ]


def _expected(bodies: list[bytes]) -> dict[bytes, set[str]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    want: dict[bytes, set[str]] = {}
    for body in bodies:
        want.update(harness.expected_span_ids(ExportTraceServiceRequest.FromString(body)))
    return want


def _send_all(target: str, bodies: list[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        for body in bodies:
            assert harness.grpc_export_retrying(ch, body, deadline).acked


def _all_stored(api: str, want: dict[bytes, set[str]], timeout: float) -> bool:
    with httpx.Client(timeout=5.0) as client:
        return harness.wait_until(
            lambda: all(harness.stored_span_ids(client, api, t) >= ids for t, ids in want.items()),
            timeout=timeout,
            interval=0.3,
        )


def test_store_back_within_retry_window_loses_nothing(procs: list[harness.Proc], tmp_path: Path) -> None:
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    tempo = start(procs, harness.tempo_proc(tmp_path / "tempo", tports))
    coll = start(
        procs,
        harness.collector_proc(
            tmp_path / "collector",
            cports,
            tports.otlp_target,
            retry={"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "30s"},
            log_level="info",  # the exporter logs each retry at info
        ),
    )
    before = _requests(100, 3)
    _send_all(cports.grpc_target, before)
    assert _all_stored(tports.api, _expected(before), timeout=10)

    tempo.stop()
    sent_before = harness.scrape(cports.metrics_url).get(SENT, 0)
    during = _requests(200, 10)
    _send_all(cports.grpc_target, during)  # the collector acknowledges; its queue holds the data
    # Positive evidence that the exporter is retrying (not idle): several attempts failed and were
    # logged as retries, nothing more was sent, and none of it was dropped.
    assert harness.wait_until(lambda: _retries(coll) >= 3, timeout=15), coll.log_tail()
    m = harness.scrape(cports.metrics_url)
    assert m.get(SENT, 0) == sent_before, "sent while the store was down?"
    assert m.get(SEND_FAILED, 0) == 0, "dropped inside the retry window"

    start(procs, harness.tempo_proc(tmp_path / "tempo", tports))  # same ports, same WAL/blocks
    assert _all_stored(tports.api, _expected(before + during), timeout=20), "spans lost across the outage"
    assert coll.alive()
    assert harness.scrape(cports.metrics_url).get(SEND_FAILED, 0) == 0


def test_store_down_past_retry_window_counts_drops(procs: list[harness.Proc], tmp_path: Path) -> None:
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    coll = start(
        procs,
        harness.collector_proc(
            tmp_path / "collector",
            cports,
            tports.otlp_target,
            retry={"initial_interval": "100ms", "max_interval": "300ms", "max_elapsed_time": "1500ms"},
        ),
    )
    lost = _requests(300, 5)
    _send_all(cports.grpc_target, lost)
    n_lost = len(lost) * SPANS_PER_REQUEST
    # batch timeout (1s) + retry window (1.5s) + slack
    assert harness.wait_until(lambda: harness.scrape(cports.metrics_url).get(SEND_FAILED, 0) >= n_lost, timeout=15), (
        f"drops not counted: {harness.scrape(cports.metrics_url)}"
    )
    assert harness.scrape(cports.metrics_url)[SEND_FAILED] == n_lost
    assert coll.alive()

    # The store comes up: later data flows, the dropped data stays dropped (and was counted).
    start(procs, harness.tempo_proc(tmp_path / "tempo", tports))
    later = _requests(400, 2)
    _send_all(cports.grpc_target, later)
    assert _all_stored(tports.api, _expected(later), timeout=15)
    with httpx.Client(timeout=5.0) as client:
        for tid in _expected(lost):
            assert harness.stored_span_ids(client, tports.api, tid) == set()
    m = harness.scrape(cports.metrics_url)
    assert m[SEND_FAILED] == n_lost
    assert m[SENT] >= len(later) * SPANS_PER_REQUEST


def test_store_kill9_mid_ingest_keeps_every_acknowledged_span(procs: list[harness.Proc], tmp_path: Path) -> None:
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    tempo = start(procs, harness.tempo_proc(tmp_path / "tempo", tports))
    coll = start(
        procs,
        harness.collector_proc(
            tmp_path / "collector",
            cports,
            tports.otlp_target,
            retry={"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "60s"},
        ),
    )
    acked: list[bytes] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            deadline = time.monotonic() + 30
            with grpc.insecure_channel(cports.grpc_target) as ch:
                i = 0
                while not stop.is_set():
                    body = harness.build_request(1000 + i, 0, 64, SPANS_PER_TRACE)[0].SerializeToString()
                    if harness.grpc_export_retrying(ch, body, deadline).acked:
                        acked.append(body)
                    i += 1
                    time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=sender)
    t.start()
    try:
        # Kill the store once it has acknowledged (and so written to its WAL) a good part of the data.
        assert harness.wait_until(lambda: harness.scrape(cports.metrics_url).get(SENT, 0) >= 2000, timeout=15)
        tempo.kill()
        time.sleep(1.0)  # ingest goes on into the collector's queue
        start(procs, harness.tempo_proc(tmp_path / "tempo", tports))
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors
    assert len(acked) > 10
    assert _all_stored(tports.api, _expected(acked), timeout=25), "acknowledged spans missing after kill -9"
    assert coll.alive()
    assert harness.scrape(cports.metrics_url).get(SEND_FAILED, 0) == 0
