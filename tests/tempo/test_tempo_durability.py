"""Nothing acknowledged is lost: SIGKILL the real process mid-ingest, restart it, find every span."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from tempo_helpers import Exporter, new_id, request, span, tempo_doc

SPANS_PER_TRACE = 4


class Proc:
    def __init__(self, config: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "amtp_obs.tempo", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.popen.stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in self.popen.stdout], daemon=True).start()  # type: ignore[union-attr]
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            self.popen.kill()
            raise AssertionError(f"no ready line; stderr: {self.popen.stderr.read()}") from None  # type: ignore[union-attr]
        fields = dict(f.split("=", 1) for f in line.split()[2:])
        self.http_url, self.otlp = fields["http"], fields["otlp_grpc"]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    doc = tempo_doc(
        tmp_path / "state",
        # Cut blocks every few hundred ms so that the kill can also land mid-flush.
        ingester={"flush_check_period": "100ms", "max_block_duration": "300ms", "trace_idle_period": "1s"},
    )
    path = tmp_path / "tempo.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def _sender(endpoint: str, acked: list[bytes], stop: threading.Event) -> None:
    with Exporter(endpoint) as ex:
        while not stop.is_set():
            tid = new_id(16)
            root = new_id(8)
            spans = [span(tid, "root", span_id=root)] + [
                span(tid, f"child-{i}", parent=root, attrs={"i": i}) for i in range(SPANS_PER_TRACE - 1)
            ]
            code, _ = ex.export(request("svc-durable", spans), timeout=5)
            if code == grpc.StatusCode.OK:
                acked.append(tid)
            else:
                return


def test_sigkill_mid_ingest_loses_nothing_acknowledged(config: Path, procs: list[Proc]) -> None:
    first = Proc(config)
    procs.append(first)
    acked: list[list[bytes]] = [[] for _ in range(4)]
    stop = threading.Event()
    threads = [threading.Thread(target=_sender, args=(first.otlp, a, stop)) for a in acked]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(map(len, acked)) < 1500 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.popen.pid, signal.SIGKILL)  # while the senders are still sending
    first.popen.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    all_acked = [tid for a in acked for tid in a]
    assert len(all_acked) >= 1500, "the store acknowledged too little to make the test meaningful"
    wal_and_blocks = list((config.parent / "state").rglob("*"))
    assert any(p.suffix == ".wal" for p in wal_and_blocks)
    # Recovery has to combine blocks cut before the kill with the WAL replay.
    assert any(p.name == "meta.json" for p in wal_and_blocks)

    second = Proc(config)
    procs.append(second)
    missing, short = [], []
    with httpx.Client(base_url=second.http_url, timeout=10) as http:
        for tid in all_acked:
            resp = http.get(f"/api/traces/{tid.hex()}", headers={"Accept": "application/protobuf"})
            if resp.status_code != 200:
                missing.append(tid.hex())
                continue
            td = TracesData()
            td.ParseFromString(resp.content)
            n = sum(len(ss.spans) for rs in td.resource_spans for ss in rs.scope_spans)
            if n != SPANS_PER_TRACE:  # neither lost nor replayed twice
                short.append((tid.hex(), n))
        assert not missing, f"{len(missing)} acknowledged traces lost, e.g. {missing[:3]}"
        assert not short, f"traces with the wrong span count after replay: {short[:3]}"
        # Still accepting writes after recovery.
        with Exporter(second.otlp) as ex:
            tid = new_id(16)
            assert ex.export(request("svc-durable", [span(tid, "after")]))[0] == grpc.StatusCode.OK
        assert http.get(f"/api/traces/{tid.hex()}").status_code == 200


def test_graceful_sigterm_and_restart(config: Path, procs: list[Proc]) -> None:
    p = Proc(config)
    procs.append(p)
    tid = new_id(16)
    with Exporter(p.otlp) as ex:
        assert ex.export(request("svc", [span(tid, "kept")]))[0] == grpc.StatusCode.OK
    p.popen.send_signal(signal.SIGTERM)
    assert p.popen.wait(15) == 0
    assert p.popen.stderr is not None and "Traceback" not in p.popen.stderr.read()
    again = Proc(config)
    procs.append(again)
    assert httpx.get(f"{again.http_url}/api/traces/{tid.hex()}", timeout=10).status_code == 200
