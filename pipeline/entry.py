"""The `vidpipe` console command's entry point: nothing heavy is imported before the Ctrl-C guard is in place, so a
Ctrl-C while the command loads (numpy, pydantic, ...) ends it at once and quietly, with the status of a stop."""

from __future__ import annotations

import signal
import sys


def interrupted() -> int:
    """A Ctrl-C before anything was started: said, with the exit status of a stop."""
    print("stopped", file=sys.stderr)
    return 128 + signal.SIGINT


def main() -> int:
    try:
        from pipeline.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # while pipeline.cli loads: its own main catches the ones after
        return interrupted()


if __name__ == "__main__":
    sys.exit(main())
