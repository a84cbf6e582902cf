"""Process records: down stops exactly what up started, whole process groups, never a recycled pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from amtp_obs import env
from amtp_obs.stack.state import (
    Layout,
    ProcessRecord,
    alive,
    group_members,
    process_cmdline,
    process_start_time,
    state_dir,
    stop_record,
)

# A leader that ignores nothing and a grandchild in the same group (as a service with workers).
FAMILY = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def start(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)


def record(proc: subprocess.Popen[bytes], tmp_path: Path) -> ProcessRecord:
    return ProcessRecord(
        "svc",
        proc.pid,
        process_start_time(proc.pid),
        process_cmdline(proc.pid),
        time.time(),
        str(tmp_path / "svc.log"),
    )


def wait_members(pgid: int, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(group_members(pgid)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_state_dir_precedence(tmp_path: Path, monkeypatch) -> None:
    assert state_dir(tmp_path / "x", {}) == (tmp_path / "x").resolve()
    assert state_dir(None, {env.AMTP_OBS_STATE_DIR: str(tmp_path / "y")}) == (tmp_path / "y").resolve()
    monkeypatch.chdir(tmp_path)
    assert state_dir(None, {}) == (tmp_path / ".amtp-obs").resolve()


def test_record_roundtrip_and_identity(tmp_path: Path) -> None:
    proc = start("import time; time.sleep(60)")
    try:
        layout = Layout(tmp_path)
        rec = record(proc, tmp_path)
        rec.save(layout)
        loaded = ProcessRecord.load(layout, "svc")
        assert loaded == rec and loaded.matches()
        # Same pid, different start time: a recycled pid must not be taken for ours.
        impostor = ProcessRecord("svc", proc.pid, (rec.start_time or 0) + 1, rec.cmdline, 0.0, rec.log)
        assert not impostor.matches()
        assert stop_record(impostor, timeout=1) == "not running"
        assert alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not rec.matches()


def test_stop_takes_down_the_whole_group(tmp_path: Path) -> None:
    proc = start(FAMILY)
    wait_members(proc.pid, 2)
    members = group_members(proc.pid)
    assert len(members) == 2
    assert stop_record(record(proc, tmp_path), timeout=5) == "stopped"
    proc.wait(timeout=5)
    assert group_members(proc.pid) == []
    assert not any(alive(p) for p in members)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    proc = start(STUBBORN)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    assert stop_record(record(proc, tmp_path), timeout=0.5) == "killed after timeout"
    proc.wait(timeout=5)
    assert proc.returncode == -9


def test_zombie_counts_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(proc.pid)  # exited, not yet reaped
    proc.wait()
    assert os.path.exists("/proc/self/stat")
