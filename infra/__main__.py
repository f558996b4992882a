"""Pulumi entry (Pulumi.yaml `main: infra/`): runs as a script, so the repo root goes on sys.path first."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
