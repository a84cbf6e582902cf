"""The real Prometheus binary for tests, on a free loopback port (skipped where it is missing)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from amtp_obs.net import LOOPBACK, free_port
from amtp_obs.shutdown import terminate
from amtp_obs.testing import tools
from amtp_obs.tools import find_tool


@dataclass
class Prom:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def run_prometheus(
    work: Path,
    rule_files: list[Path] | None = None,
    *,
    scrape_configs: list[dict[str, Any]] | None = None,
    interval: str = "15s",
) -> Iterator[Prom]:
    """Prometheus scraping ``scrape_configs`` (none by default) every ``interval``, accepting remote write."""
    tools.gate(["prometheus"])
    binary = find_tool("prometheus")
    assert binary is not None
    work.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"global": {"scrape_interval": interval, "evaluation_interval": interval}}
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    if scrape_configs:
        config["scrape_configs"] = scrape_configs
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-remote-write-receiver",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Prometheus is not ready: " + (work / "prometheus.log").read_text()[-2000:])
            time.sleep(0.1)
        yield Prom(url, proc)
    finally:
        terminate(proc)
        log.close()
