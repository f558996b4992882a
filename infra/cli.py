"""What the program's commands share: `--version` and the exit status (docs/cli.md).

The version and the exit codes are the agent's (overlay_agent), so the whole product has
one of each; the agent imports nothing from infra, infra may import the agent's constants.
"""

from __future__ import annotations

import argparse

from overlay_agent import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STATUS, __version__

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "common_parser"]


def common_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the product's `--version` and the exit status in its help."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser
