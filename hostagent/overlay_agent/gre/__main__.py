"""Entry point of the userspace GRE daemon: `python -m overlay_agent.gre --state-dir DIR`."""

import sys

from .userspace import main

sys.exit(main())
