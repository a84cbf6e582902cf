"""The embedded stack's state directory and the processes recorded in it.

A pid alone can be recycled by the kernel, so each record keeps the process start time (field 22
of ``/proc/<pid>/stat``) and its command line; ``down`` only signals a process group whose leader
still matches both. Linux-only, like the rest of the embedded stack's process handling.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from amtp_obs import env

DEFAULT_STATE_DIR = ".amtp-obs"


def state_dir(explicit: Path | None = None, environ: dict[str, str] | None = None) -> Path:
    """``--state-dir``, else ``$AMTP_OBS_STATE_DIR``, else ``.amtp-obs/`` in the working directory."""
    if explicit is not None:
        return explicit.resolve()
    value = (environ if environ is not None else os.environ).get(env.AMTP_OBS_STATE_DIR)
    return Path(value).resolve() if value else (Path.cwd() / DEFAULT_STATE_DIR).resolve()


@dataclass(frozen=True)
class Layout:
    """Where things live under the state directory."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.pids / f"{service}.json"

    def create(self) -> None:
        for d in (self.root, self.logs, self.pids, self.config):
            d.mkdir(parents=True, exist_ok=True)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces: split after the last ')'.
    head, _, tail = raw.rpartition(")")
    if not head:
        return None
    return tail.split()


def process_start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # tail[0] is field 3 (state); starttime is field 22 -> tail[19].
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for a parent that may never reap it)."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (field 5 of /proc/<pid>/stat)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


@dataclass
class ProcessRecord:
    """What ``up`` wrote about one started service."""

    service: str
    pid: int
    start_time: int | None
    cmdline: list[str]
    started_at: float
    log: str

    def save(self, layout: Layout) -> None:
        layout.pids.mkdir(parents=True, exist_ok=True)
        tmp = layout.pid_file(self.service).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(layout.pid_file(self.service))

    @classmethod
    def load(cls, layout: Layout, service: str) -> ProcessRecord | None:
        path = layout.pid_file(service)
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def matches(self) -> bool:
        """The recorded process is still the one ``up`` started (same start time and command)."""
        if not alive(self.pid):
            return False
        if self.start_time is not None and process_start_time(self.pid) != self.start_time:
            return False
        return process_cmdline(self.pid) == self.cmdline

    def group_alive(self) -> list[int]:
        """Processes left in the service's group (its own session: pgid == pid)."""
        return group_members(self.pid)


def records(layout: Layout) -> list[ProcessRecord]:
    if not layout.pids.is_dir():
        return []
    out = []
    for f in sorted(layout.pids.glob("*.json")):
        rec = ProcessRecord.load(layout, f.stem)
        if rec is not None:
            out.append(rec)
    return out


def stop_record(rec: ProcessRecord, timeout: float = 10.0) -> str:
    """SIGTERM the service's process group, SIGKILL what is left after ``timeout``; says what happened."""
    # A leader that exited leaves its group id reserved while members remain: still ours.
    if not rec.matches() and (alive(rec.pid) or not group_members(rec.pid)):
        return "not running"
    try:
        os.killpg(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    except PermissionError as exc:
        return f"cannot signal: {exc}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(rec.pid):
            return "stopped"
        time.sleep(0.05)
    try:
        os.killpg(rec.pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_members(rec.pid):
        time.sleep(0.05)
    return "killed after timeout"
