"""Restart torture: random restarts and kill -9s of the collector and the trace store, nothing acknowledged lost.

The embedded collector and trace store run as real processes on loopback ports. From a state
directory with history (a block cut, segments replayed after a kill, idle restarts, as issue 11's
loss needed), the test draws steps at random from: ingest a batch, a clean down/up, an idle restart
of the store, kill -9 of the store, of the collector, and of both.

The ledger counts a span once the store has it (read back by id). Spans the collector had
acknowledged but still held in its batch or queue when it was killed are lost, as with the real
collector's in-memory queue (docs/embedded.md, "Durability"); they are counted and printed, never
put in the ledger. At the end every ledger span is readable by id and every ledger trace is
findable by search, and no trace or span is there twice.

Seeded: a fresh seed each run, printed (``-s``, or in the failure message); reproduce a run with
``AMTP_OBS_TORTURE_SEED=<seed>``. ``AMTP_OBS_TORTURE_STEPS`` changes the number of random steps.
"""

from __future__ import annotations

import collections
import os
import random
import time
from pathlib import Path

import grpc
import httpx
import pytest

import harness
from amtp_obs.testing.poll import eventually
from conftest import start

SEED_ENV = "AMTP_OBS_TORTURE_SEED"
STEPS_ENV = "AMTP_OBS_TORTURE_STEPS"
DEFAULT_STEPS = 20
SPANS_PER_TRACE = 3

# Blocks are cut every second or so, so that steps land before, during and after cuts.
INGESTER = {"flush_check_period": "200ms", "max_block_duration": "1s", "trace_idle_period": "1s"}
# Long enough that no store restart here outlasts it: what the collector holds is retried, not dropped.
RETRY = {"initial_interval": "100ms", "max_interval": "500ms", "max_elapsed_time": "120s"}

STEP_KINDS = ("ingest", "down_up", "idle_restart", "kill_store", "kill_collector", "kill_stack")


class Torture:
    """The stack, the ledger and the steps; every step leaves both processes running."""

    def __init__(self, root: Path, procs: list[harness.Proc], seed: int) -> None:
        self.root, self.procs, self.seed = root, procs, seed
        self.rng = random.Random(seed)
        self.service = f"amtp-torture-{seed}"
        self.tports, self.cports = harness.TempoPorts(), harness.CollectorPorts()
        self.tempo: harness.Proc | None = None
        self.collector: harness.Proc | None = None
        self.next_trace = 0
        self.ledger: dict[bytes, set[str]] = {}
        """trace id -> span ids the store has had (base64, as the API gives them)."""
        self.pending: dict[bytes, set[str]] = {}
        """Acknowledged by the collector, not yet seen in the store."""
        self.may_repeat: set[bytes] = set()
        """Traces in flight when the store went away: the collector's retry may store a span twice."""
        self.lost_in_collector: int = 0
        self.log: list[str] = []
        self.http = httpx.Client(timeout=10.0)

    # -- processes -----------------------------------------------------------------------

    def start_tempo(self) -> None:
        proc = harness.tempo_proc(self.root / "tempo", self.tports, ingester=INGESTER)
        self.tempo = start(self.procs, proc)

    def start_collector(self) -> None:
        proc = harness.collector_proc(self.root / "collector", self.cports, self.tports.otlp_target, retry=RETRY)
        self.collector = start(self.procs, proc)

    # -- reading the store ----------------------------------------------------------------

    def stored(self, tid: bytes) -> collections.Counter[str]:
        """Span id -> how many times the store returns it for this trace."""
        r = self.http.get(f"{self.tports.api}/api/traces/{tid.hex()}")
        if r.status_code == 404:
            return collections.Counter()
        r.raise_for_status()
        return collections.Counter(
            s["spanId"] for b in r.json()["batches"] for ss in b.get("scopeSpans", []) for s in ss.get("spans", [])
        )

    def confirm(self) -> None:
        """Move what the store has of the pending traces into the ledger (one pass, no waiting)."""
        for tid, want in list(self.pending.items()):
            have = want & set(self.stored(tid))
            if have:
                self.ledger.setdefault(tid, set()).update(have)
            if have == want:
                del self.pending[tid]

    def wait_confirmed(self, what: str, timeout: float = 30.0) -> None:
        def done() -> bool:
            self.confirm()
            return not self.pending

        assert eventually(done, timeout, 0.2, ignore=(httpx.HTTPError,)), self.fail(
            f"{what}: {len(self.pending)} acknowledged traces never reached the store"
        )

    def settle(self) -> None:
        """Wait until the store's received-span count stops moving (a dead collector's last export landed)."""
        counts: list[float] = []

        def still() -> bool:
            counts.append(harness.scrape(f"{self.tports.api}/metrics").get("tempo_distributor_spans_received_total", 0))
            return len(counts) >= 3 and counts[-1] == counts[-3]

        eventually(still, 10.0, 0.25, ignore=(httpx.HTTPError,))

    def collector_lost(self) -> None:
        """The collector died: what the store has of the pending traces is kept, the rest is its window."""
        self.settle()
        self.confirm()
        lost = sum(len(want - self.ledger.get(tid, set())) for tid, want in self.pending.items())
        self.lost_in_collector += lost
        self.pending.clear()
        self.log.append(f"  collector window: {lost} spans lost")

    def fail(self, msg: str) -> str:
        return f"{msg} (seed {self.seed}: rerun with {SEED_ENV}={self.seed}); steps:\n" + "\n".join(self.log)

    # -- steps -----------------------------------------------------------------------------

    def ingest(self, wait: bool) -> None:
        n = self.rng.randint(1, 8)
        req, _ = harness.build_request(
            self.seed, self.next_trace, n * SPANS_PER_TRACE, SPANS_PER_TRACE, service=self.service
        )
        self.next_trace += n
        with grpc.insecure_channel(self.cports.grpc_target) as ch:
            sent = harness.grpc_export_retrying(ch, req.SerializeToString(), time.monotonic() + 15)
        assert sent.acked, self.fail("the collector did not acknowledge an export")
        self.pending.update(harness.expected_span_ids(req))
        if wait:
            self.wait_confirmed("ingest")

    def down_up(self) -> None:
        """``amtp-obs down`` / ``up``: SIGTERM in reverse start order (the collector drains first)."""
        assert self.collector is not None and self.tempo is not None
        self.collector.stop()
        self.tempo.stop()
        self.start_tempo()
        self.start_collector()
        self.wait_confirmed("clean down/up")  # a clean stop drains the collector: nothing may be missing

    def idle_restart(self) -> None:
        assert self.tempo is not None
        self.may_repeat.update(self.pending)
        self.tempo.stop()
        self.start_tempo()

    def kill_store(self) -> None:
        assert self.tempo is not None
        self.may_repeat.update(self.pending)
        self.tempo.kill()
        self.start_tempo()

    def kill_collector(self) -> None:
        assert self.collector is not None
        self.collector.kill()
        self.collector_lost()
        self.start_collector()

    def kill_stack(self) -> None:
        assert self.collector is not None and self.tempo is not None
        self.collector.kill()
        self.tempo.kill()
        self.start_tempo()
        self.collector_lost()
        self.start_collector()

    def step(self, kind: str) -> None:
        self.confirm()
        t0 = time.monotonic()
        if kind == "ingest":
            wait = self.rng.random() < 0.5
            self.ingest(wait)
            kind = "ingest+wait" if wait else "ingest"
        else:
            getattr(self, kind)()
        self.log.append(
            f"{kind:<15} {time.monotonic() - t0:5.2f}s ledger={len(self.ledger)} traces, pending={len(self.pending)}"
        )
        # Sometimes give the store time to cut a block before the next step, sometimes not.
        time.sleep(self.rng.choice((0.0, 0.0, 0.3, 1.0)))

    # -- setup and checks ------------------------------------------------------------------

    def history(self) -> None:
        """A state directory as a user's looks after a while: blocks, replayed segments, idle restarts."""
        self.start_tempo()
        self.start_collector()
        self.step("ingest")
        self.wait_confirmed("history")
        assert self.tempo is not None
        assert self.http.post(f"{self.tports.api}/flush").status_code == 204  # a block
        self.ingest(wait=True)  # left in the WAL
        self.step("kill_store")  # replayed at the next start
        self.step("idle_restart")
        self.step("idle_restart")
        blocks = [p for p in (self.root / "tempo" / "blocks").rglob("meta.json")]
        assert blocks, self.fail("no block was cut while building history")

    def check(self) -> None:
        self.down_up()  # a final clean restart: everything pending arrives, then the store restarts
        assert not self.pending
        missing, repeated = [], []
        for tid, want in self.ledger.items():
            have = self.stored(tid)
            if not want <= set(have):
                missing.append((tid.hex(), len(want - set(have))))
            elif tid not in self.may_repeat and any(have[s] > 1 for s in want):
                repeated.append(tid.hex())
        assert not missing, self.fail(f"{len(missing)} ledger traces lost spans, e.g. {missing[:3]}")
        assert not repeated, self.fail(f"{len(repeated)} traces have spans stored twice, e.g. {repeated[:3]}")
        r = self.http.get(
            f"{self.tports.api}/api/search",
            params={"tags": f"service.name={self.service}", "limit": self.next_trace + 10},
        )
        r.raise_for_status()
        found = [t["traceID"] for t in r.json()["traces"]]
        dupes = [t for t, n in collections.Counter(found).items() if n > 1]
        assert not dupes, self.fail(f"search lists traces twice: {dupes[:3]}")
        unfound = {t.hex().lstrip("0") for t in self.ledger} - set(found)
        assert not unfound, self.fail(f"{len(unfound)} ledger traces not found by search, e.g. {sorted(unfound)[:3]}")


def _seed() -> int:
    env = os.environ.get(SEED_ENV)
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


def test_restart_torture_loses_nothing_acknowledged(
    procs: list[harness.Proc], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = _seed()
    with capsys.disabled():  # shown in every run's output, not only on failure
        print(f"\nrestart torture seed {seed} (reproduce: {SEED_ENV}={seed})", flush=True)
    t = Torture(tmp_path, procs, seed)
    t0 = time.monotonic()
    try:
        t.history()
        n = int(os.environ.get(STEPS_ENV, DEFAULT_STEPS))
        # Every kind at least once, the rest drawn at random (ingest weighted up), in a seeded order.
        kinds = list(STEP_KINDS) + t.rng.choices(STEP_KINDS, weights=(5, 1, 1, 1, 1, 1), k=max(0, n - len(STEP_KINDS)))
        t.rng.shuffle(kinds)
        for kind in kinds:
            t.step(kind)
        t.check()
    finally:
        t.http.close()
    ledger_spans = sum(len(v) for v in t.ledger.values())
    summary = (
        f"restart torture seed {seed}: {len(kinds)} random steps in {time.monotonic() - t0:.1f}s; "
        f"ledger {len(t.ledger)} traces / {ledger_spans} spans, 0 lost; "
        f"lost in the collector's in-memory window (kill -9): {t.lost_in_collector} spans"
    )
    with capsys.disabled():
        print(summary, flush=True)
    print("\n".join(t.log))
    _record(summary)


def _record(line: str) -> None:
    """Append the run's summary to $AMTP_OBS_TORTURE_LOG when set (the multi-seed run in docs/embedded.md)."""
    path = os.environ.get("AMTP_OBS_TORTURE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
