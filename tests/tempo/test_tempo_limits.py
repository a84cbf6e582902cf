"""Ingestion limits as Tempo 2.4.1 applies them.

The rate limit refuses the whole export with RESOURCE_EXHAUSTED (distributor ``checkForRateLimits``).
``max_traces_per_user`` and ``max_bytes_per_trace`` are the ingesters' per-trace checks: a trace over
either is discarded and counted in ``tempo_discarded_spans_total``, the rest of the export is stored,
and the export succeeds (modules/ingester/instance.go ``PushBytesRequest``, distributor
``countDiscaredSpans``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from tempo_helpers import Exporter, new_id, request, span, tempo_doc

from amtp_obs.tempo import TempoApp


def _metric(http_url: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in httpx.get(f"{http_url}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")].split(",")
            if all(part in got for part in want):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_rate_limit(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo(
        tempo_doc(
            tmp_path,
            overrides={"defaults": {"ingestion": {"rate_limit_bytes": 100, "burst_size_bytes": 2000}}},
        )
    )
    big = request("svc", [span(new_id(16), "x" * 10, attrs={"pad": "p" * 400}) for _ in range(3)])
    size = big.ByteSize()
    assert 1000 < size < 2000
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(big)[0] == grpc.StatusCode.OK  # fits the burst
        code, msg = ex.export(big)  # the bucket refills at only 100 B/s
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert msg == (
        f"RATE_LIMITED: ingestion rate limit (100 bytes) exceeded while adding {size} bytes for user single-tenant"
    )
    assert _metric(app.http_url, "tempo_discarded_spans_total", reason="rate_limited") == 3
    assert _metric(app.http_url, "tempo_distributor_spans_received_total") == 3


def _spans(http_url: str, trace_id: bytes) -> list[str]:
    r = httpx.get(f"{http_url}/api/traces/{trace_id.hex()}")
    if r.status_code == 404:
        return []
    return [s["name"] for b in r.json()["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]


def test_max_live_traces(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo(
        tempo_doc(
            tmp_path,
            overrides={"defaults": {"ingestion": {"max_traces_per_user": 3}}},
            ingester={"trace_idle_period": "60s"},
        )
    )
    ids = [new_id(16) for _ in range(5)]
    with Exporter(app.otlp_grpc_endpoint) as ex:
        for tid in ids[:2]:
            assert ex.export(request("svc", [span(tid, "live")]))[0] == grpc.StatusCode.OK
        # One export, two new traces: the first takes the last place, the second is discarded.
        assert ex.export(request("svc", [span(ids[2], "third"), span(ids[3], "fourth")]))[0] == grpc.StatusCode.OK
        # At the limit, Tempo refuses even a trace that is already live: the count is compared, not the ids.
        assert ex.export(request("svc", [span(ids[0], "more"), span(ids[4], "fifth")]))[0] == grpc.StatusCode.OK
    assert _spans(app.http_url, ids[2]) == ["third"]
    assert _spans(app.http_url, ids[3]) == _spans(app.http_url, ids[4]) == []
    assert _spans(app.http_url, ids[0]) == ["live"]
    assert _metric(app.http_url, "tempo_discarded_spans_total", reason="live_traces_exceeded") == 3
    assert _metric(app.http_url, "tempo_ingester_live_traces") == 3


def test_max_bytes_per_trace(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    """A trace is refused once its bytes since it became live would pass the limit; its other spans
    already stored stay, and the other traces of the same export are stored."""
    app = start_tempo(tempo_doc(tmp_path, overrides={"defaults": {"global": {"max_bytes_per_trace": 600}}}))
    big, small = new_id(16), new_id(16)
    with Exporter(app.otlp_grpc_endpoint) as ex:
        first = request("svc", [span(big, "a", attrs={"pad": "p" * 200})])
        assert ex.export(first)[0] == grpc.StatusCode.OK
        second = request("svc", [span(big, "b", attrs={"pad": "p" * 400}), span(small, "c")])
        assert ex.export(second)[0] == grpc.StatusCode.OK
    assert _spans(app.http_url, big) == ["a"]
    assert _spans(app.http_url, small) == ["c"]
    assert _metric(app.http_url, "tempo_discarded_spans_total", reason="trace_too_large") == 1


def test_idle_traces_free_the_limit(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo(
        tempo_doc(
            tmp_path,
            overrides={"defaults": {"ingestion": {"max_traces_per_user": 1}}},
            ingester={"trace_idle_period": "200ms", "flush_check_period": "50ms"},
        )
    )
    a, b, c = new_id(16), new_id(16), new_id(16)
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(a, "a")]))[0] == grpc.StatusCode.OK
        assert ex.export(request("svc", [span(b, "b")]))[0] == grpc.StatusCode.OK  # discarded
        time.sleep(0.4)
        assert ex.export(request("svc", [span(c, "c")]))[0] == grpc.StatusCode.OK
    assert (_spans(app.http_url, a), _spans(app.http_url, b), _spans(app.http_url, c)) == (["a"], [], ["c"])


def test_sdk_exporter_sees_the_refusal(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    """The stock OTLP exporter treats RESOURCE_EXHAUSTED as retryable and finally reports failure."""
    app = start_tempo(
        tempo_doc(tmp_path, overrides={"defaults": {"ingestion": {"rate_limit_bytes": 1, "burst_size_bytes": 10}}})
    )
    tp = TracerProvider()
    with tp.get_tracer("t").start_as_current_span("too-big-for-the-burst") as s:
        s.set_attribute("pad", "x" * 100)
    exporter = OTLPSpanExporter(endpoint=app.otlp_grpc_endpoint, insecure=True, timeout=1)
    try:
        assert exporter.export([s]) == SpanExportResult.FAILURE  # type: ignore[list-item]
    finally:
        exporter.shutdown()
    assert _metric(app.http_url, "tempo_discarded_spans_total", reason="rate_limited") >= 1


def test_discarded_spans_series_as_tempo_records_them(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    """Tempo 2.4.1's distributor records three reasons after every push, 0 when nothing was discarded
    (modules/distributor/distributor.go); other reasons appear at their first discard only."""
    app = start_tempo(tempo_doc(tmp_path))
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(new_id(16), "ok")]))[0] == grpc.StatusCode.OK
    text = httpx.get(f"{app.http_url}/metrics").text
    series = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(
        "tempo_discarded_spans_total{")}  # fmt: skip
    assert series == {
        f'tempo_discarded_spans_total{{reason="{r}",tenant="single-tenant"}}': "0.0"
        for r in ("live_traces_exceeded", "trace_too_large", "unknown_error")
    }
