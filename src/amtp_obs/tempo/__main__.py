"""``python -m amtp_obs.tempo --config FILE``: run the trace store until SIGTERM or SIGINT.

Exit status 0 after a graceful shutdown, 1 when the config or the environment stops it from
starting (the message names the key or the address), 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from amtp_obs.shutdown import stop_event
from amtp_obs.tempo.app import StartError, TempoApp, read_config_file
from amtp_obs.tempo.config import ConfigError, config_warnings

GC_THRESHOLDS = (20_000, 20, 100)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amtp_obs.tempo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        "-config.file",
        "--config.file",
        dest="config",
        required=True,
        help="tempo.yaml (Tempo 2.4.1 format)",
    )
    p.add_argument(
        "--verify-config",
        "-config.verify",
        "--config.verify",
        dest="verify",
        action="store_true",
        help="validate the config, print warnings and exit",
    )
    return p


async def _run(app: TempoApp) -> None:
    stop = stop_event()
    await app.start()
    print(
        f"tempo ready http={app.http_url} otlp_grpc={app.otlp_grpc_endpoint} grpc={app.grpc_port}",
        flush=True,
    )
    await stop.wait()
    logging.getLogger("amtp_obs.tempo").info("shutting down")
    await app.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        doc = read_config_file(args.config)
        app = TempoApp.from_config(doc)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"tempo: invalid config {args.config}: {err}", file=sys.stderr)
        return 1
    warnings = config_warnings(doc)
    logging.basicConfig(
        level=_LEVELS.get(app.cfg.server.log_level, logging.INFO),
        format="level=%(levelname)s ts=%(asctime)s caller=%(name)s msg=%(message)r",
        stream=sys.stderr,
    )
    for w in warnings:
        logging.getLogger("amtp_obs.tempo").warning("%s", w)
    if args.verify:
        print(f"tempo: {args.config}: valid")
        return 0
    # The store keeps a few long-lived objects per trace; with the default thresholds the cyclic
    # collector re-scans them often enough to cost ~10 % of ingest CPU (py-spy, bench/). Almost
    # nothing here forms reference cycles, so collect less often; startup objects are frozen.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        asyncio.run(_run(app))
    except StartError as exc:
        print(f"tempo: cannot start: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for err in exc.errors:
            print(f"tempo: invalid config {args.config}: {err}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tempo: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
