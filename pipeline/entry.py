"""The `vidpipe` console command's entry point: nothing heavy is imported before the Ctrl-C guard is in place, so a
Ctrl-C while the command loads (numpy, pydantic, ...) ends it at once and quietly, with the status of a stop."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    try:
        from pipeline.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
