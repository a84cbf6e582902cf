"""Overload past the collector's memory_limiter: refused with 503 / UNAVAILABLE, no crash, no loss.

The trace store starts down, so the collector's exporter queue fills and its memory grows past a
small ``limit_mib``; from then on the receiver refuses (OTLP's retryable answers). The store then
comes up, the queue drains, memory falls, and the clients' retries are accepted: in the end every
span of every request is in the store.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import harness
from amtp_obs.collector.telemetry import PROCESSOR_REFUSED, RECEIVER_REFUSED, metric_name
from conftest import start

BATCH = 512
SPANS_PER_TRACE = 8
WORKERS = 4
DEADLINE_S = 25.0
MAX_REQUESTS = 600
AFTER_REFUSAL = 16
SPIKE_MIB = 40
OVER_BASELINE_MIB = 40
"""The limiter refuses once RSS passes the idle collector's own RSS by this much (limit - spike)."""


def _baseline_rss_mib(tmp_path: Path, tempo_otlp: str) -> float:
    """RSS of an idle collector on the same config with the limiter out of reach, once it is ready.

    The limit is set above this, so the test means the same on a machine whose Python, libraries or
    allocator give a larger or smaller process.
    """
    probe = harness.collector_proc(
        tmp_path / "probe", harness.CollectorPorts(), tempo_otlp, memory_limit_mib=8192, spike_limit_mib=SPIKE_MIB
    )
    probe.start(30)
    try:
        rss = probe.rss_mib()
        assert rss is not None and rss > 0, probe.log_tail()
        return rss
    finally:
        probe.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_overload_refuses_then_accepts_everything(procs: list[harness.Proc], tmp_path: Path, protocol: str) -> None:
    tports = harness.TempoPorts()
    cports = harness.CollectorPorts()
    baseline = _baseline_rss_mib(tmp_path, tports.otlp_target)
    limit_mib = math.ceil(baseline) + OVER_BASELINE_MIB + SPIKE_MIB
    # Small limit, fast checks; the store is down at first, so data piles up in the sending queue.
    coll = start(
        procs,
        harness.collector_proc(
            tmp_path / "collector",
            cports,
            tports.otlp_target,
            memory_limit_mib=limit_mib,
            spike_limit_mib=SPIKE_MIB,
            check_interval="100ms",
            retry={"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "60s"},
        ),
    )
    # Push new, distinct requests until the limiter refuses, then a few more (retried until accepted).
    sent: dict[int, bytes] = {}
    outcomes: dict[int, harness.SendOutcome] = {}
    errors: list[BaseException] = []
    refused_seen = threading.Event()
    lock = threading.Lock()
    counter = iter(range(MAX_REQUESTS))
    refused_at: list[int] = []
    deadline = time.monotonic() + DEADLINE_S

    def next_body() -> tuple[int, bytes] | None:
        with lock:
            i = next(counter, None)
            if i is None or (refused_at and i >= refused_at[0] + AFTER_REFUSAL):
                return None
            sent[i] = body = harness.build_request(900 + i, 0, BATCH, SPANS_PER_TRACE)[0].SerializeToString()
            return i, body

    def refused(i: int) -> None:
        with lock:
            if not refused_at:
                refused_at.append(i)
                refused_seen.set()

    def worker() -> None:
        try:
            if protocol == "grpc":
                with grpc.insecure_channel(cports.grpc_target) as ch:
                    while (item := next_body()) is not None:
                        i, body = item
                        outcomes[i] = harness.grpc_export_retrying(
                            ch, body, deadline, on_refusal=lambda _code, i=i: refused(i)
                        )
            else:
                with httpx.Client(timeout=10.0) as client:
                    url = f"{cports.http_url}/v1/traces"
                    while (item := next_body()) is not None:
                        i, body = item
                        outcomes[i] = harness.http_export_retrying(
                            client, url, body, deadline, on_refusal=lambda _code, i=i: refused(i)
                        )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    # Only once the collector has refused something does the store come up.
    assert refused_seen.wait(DEADLINE_S / 2), (
        f"the memory limiter never refused data ({len(sent)} requests sent, errors {errors}, "
        f"collector RSS {coll.rss_mib()} MiB, idle {baseline:.0f} MiB, limit {limit_mib} MiB)"
    )
    # It accepted data first: the refusals come from the data held, not from the idle process.
    assert refused_at[0] >= WORKERS, f"refused at request {refused_at[0]} (idle {baseline:.0f} MiB, limit {limit_mib})"
    assert coll.alive(), "the collector died under overload:\n" + coll.log_tail()
    start(procs, harness.tempo_proc(tmp_path / "tempo", tports))
    for t in threads:
        t.join(DEADLINE_S + 5)
    assert not errors, errors
    assert sorted(outcomes) == sorted(sent)
    assert all(o.acked for o in outcomes.values()), "some requests were never accepted"
    refusals = {r for o in outcomes.values() for r in o.refusals}
    assert refusals <= ({"UNAVAILABLE"} if protocol == "grpc" else {"503"}), refusals

    metrics = harness.scrape(cports.metrics_url)
    assert metrics.get(metric_name(PROCESSOR_REFUSED, "spans") + "_total", 0) > 0
    assert metrics.get(metric_name(RECEIVER_REFUSED, "spans") + "_total", 0) > 0

    # Everything acknowledged reaches the store.
    want: dict[bytes, set[str]] = {}
    for body in sent.values():
        want.update(harness.expected_span_ids(ExportTraceServiceRequest.FromString(body)))
    with httpx.Client(timeout=5.0) as client:

        def complete() -> bool:
            return all(harness.stored_span_ids(client, tports.api, tid) >= ids for tid, ids in want.items())

        assert harness.wait_until(complete, timeout=20, interval=0.5), "spans acknowledged but missing in the store"
    assert coll.alive()
