"""Rich consoles for the CLI: readable tables when output goes to a pipe (make, CI logs) too."""

from __future__ import annotations

import os

from rich.console import Console

PIPE_WIDTH = 140
"""Rich assumes 80 columns off a terminal, which truncates every URL in our tables."""


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console
