"""overlay-agent: wires opted-in containers and keeps tunnels and FRR in step with the stack's pairings."""

__version__ = "0.1.0"
