"""``python -m amtp_obs.collector [validate] --config FILE``: run (or only validate) the collector.

Runs in the foreground until SIGTERM/SIGINT, then shuts down gracefully (batches flushed, queues
drained). Logs go to stderr. Configuration and start-up errors are printed without a traceback
and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from amtp_obs.collector.component import ConfigError
from amtp_obs.collector.components import components
from amtp_obs.collector.config import load_config_file, parse_config
from amtp_obs.collector.service import Collector
from amtp_obs.httpserver import StartError
from amtp_obs.shutdown import stop_event

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amtp_obs.collector", description=__doc__.split("\n")[0])
    p.add_argument(
        "command",
        nargs="?",
        choices=["run", "validate"],
        default="run",
        help="run (default) or only validate the configuration",
    )
    p.add_argument(
        "--config",
        required=True,
        help="collector YAML file (e.g. infra/observability/otel-collector-config.yaml)",
    )
    return p


async def _run(collector: Collector) -> None:
    await collector.run(stop_event())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        doc = load_config_file(args.config)
        factories = components()
        parsed, problems = parse_config(doc, factories)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.command == "validate":
        print(f"{args.config}: valid", file=sys.stderr)
        return 0
    level = _LEVELS.get(parsed.service.telemetry.logs.level.lower(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s\t%(levelname)s\t%(name)s\t%(message)s")
    try:
        asyncio.run(_run(Collector(parsed, factories)))
    except StartError as exc:
        print(f"Error: cannot start the collector: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
