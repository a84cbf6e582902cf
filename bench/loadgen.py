"""OTLP trace load generator: pre-encoded export requests over HTTP/protobuf or gRPC, for a fixed time.

Requests are encoded once up front (a pool of distinct batches) and sent as raw bytes, so the sender
costs almost nothing per span and the process under test is what limits the rate. Several threads
each keep one request in flight; several of these processes can run side by side.

    python bench/loadgen.py --protocol grpc --target 127.0.0.1:4317 --duration 30 [--batch 512]
prints one JSON object: requests and spans acknowledged, refused (503/UNAVAILABLE etc.), errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

HTTP_PATH = "/v1/traces"
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = "application/x-protobuf"


def encode_pool(seed: int, batch: int, pool: int, spans_per_trace: int) -> list[bytes]:
    traces_per_req = max(1, batch // spans_per_trace)
    return [
        harness.build_request(seed, i * traces_per_req, batch, spans_per_trace)[0].SerializeToString()
        for i in range(pool)
    ]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = self.refused = self.errors = 0
        self.statuses: dict[str, int] = {}

    def add(self, outcome: str, status: str) -> None:
        with self.lock:
            setattr(self, outcome, getattr(self, outcome) + 1)
            self.statuses[status] = self.statuses.get(status, 0) + 1


REFUSAL_BACKOFF_S = 0.1
"""A refused sender waits this long before its next request, as OTLP clients back off (the SDK's
exporters start at 1 s); a zero backoff makes the collector spend its CPU parsing refused requests."""


def _http_worker(url: str, bodies: list[bytes], stop_at: float, tally: Tally, offset: int) -> None:
    import httpx

    with httpx.Client(timeout=30.0, headers={"content-type": PROTOBUF}) as client:
        i = offset
        while time.monotonic() < stop_at:
            body = bodies[i % len(bodies)]
            i += 1
            try:
                r = client.post(url, content=body)
            except httpx.HTTPError as exc:
                tally.add("errors", type(exc).__name__)
                continue
            if 200 <= r.status_code < 300:
                tally.add("ok", str(r.status_code))
            elif r.status_code in (429, 502, 503, 504):
                tally.add("refused", str(r.status_code))
                time.sleep(REFUSAL_BACKOFF_S)
            else:
                tally.add("errors", str(r.status_code))


def _grpc_worker(target: str, bodies: list[bytes], stop_at: float, tally: Tally, offset: int) -> None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        # Raw bytes in and out: no per-request protobuf work in the sender.
        export = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        i = offset
        while time.monotonic() < stop_at:
            body = bodies[i % len(bodies)]
            i += 1
            try:
                export(body, timeout=30.0)
                tally.add("ok", "OK")
            except grpc.RpcError as exc:
                code = exc.code()
                name = code.name if code is not None else "UNKNOWN"
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    tally.add("refused", name)
                    time.sleep(REFUSAL_BACKOFF_S)
                else:
                    tally.add("errors", name)


def send_unique(
    target: str, requests: int, batch: int, seed: int, concurrency: int, spans_per_trace: int
) -> dict[str, Any]:
    """Send exactly ``requests`` distinct gRPC exports (encoded as they go), retrying refusals."""
    import grpc

    traces_per_req = max(1, batch // spans_per_trace)
    next_index = iter(range(requests))
    lock = threading.Lock()
    tally = Tally()

    def worker() -> None:
        with grpc.insecure_channel(target) as channel:
            export = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                body = harness.build_request(seed, i * traces_per_req, batch, spans_per_trace)[0]
                data = body.SerializeToString()
                for _attempt in range(200):
                    try:
                        export(data, timeout=30.0)
                        tally.add("ok", "OK")
                        break
                    except grpc.RpcError as exc:
                        code = exc.code()
                        tally.add("refused", code.name if code is not None else "UNKNOWN")
                        time.sleep(0.05)
                else:
                    tally.add("errors", "gave up")

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "elapsed_s": time.monotonic() - start,
        "requests_ok": tally.ok,
        "requests_refused": tally.refused,
        "requests_error": tally.errors,
        "spans_ok": tally.ok * batch,
        "traces": requests * traces_per_req,
        "statuses": tally.statuses,
    }


def run(
    protocol: str,
    target: str,
    duration: float,
    batch: int,
    seed: int,
    pool: int,
    concurrency: int,
    spans_per_trace: int = 1,
) -> dict[str, Any]:
    t0 = time.monotonic()
    bodies = encode_pool(seed, batch, pool, spans_per_trace)
    encode_s = time.monotonic() - t0
    tally = Tally()
    worker = _http_worker if protocol == "http" else _grpc_worker
    dest = target.rstrip("/") + HTTP_PATH if protocol == "http" else target
    start = time.monotonic()
    stop_at = start + duration
    threads = [
        threading.Thread(target=worker, args=(dest, bodies, stop_at, tally, k * (pool // max(1, concurrency))))
        for k in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {
        "protocol": protocol,
        "elapsed_s": elapsed,
        "encode_s": encode_s,
        "batch": batch,
        "requests_ok": tally.ok,
        "requests_refused": tally.refused,
        "requests_error": tally.errors,
        "spans_ok": tally.ok * batch,
        "statuses": tally.statuses,
        "bytes_per_request": len(bodies[0]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=("http", "grpc"), required=True)
    ap.add_argument("--target", required=True, help="http://host:port for http, host:port for grpc")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pool", type=int, default=32, help="distinct pre-encoded requests to cycle through")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight (one per thread)")
    ap.add_argument("--spans-per-trace", type=int, default=1)
    ap.add_argument(
        "--unique-requests",
        type=int,
        default=0,
        help="gRPC only: send exactly this many distinct requests (retrying refusals) instead of a timed run",
    )
    a = ap.parse_args(argv)
    if a.unique_requests:
        result = send_unique(a.target, a.unique_requests, a.batch, a.seed, a.concurrency, a.spans_per_trace)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    result = run(a.protocol, a.target, a.duration, a.batch, a.seed, a.pool, a.concurrency, a.spans_per_trace)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
