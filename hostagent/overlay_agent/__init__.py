"""overlay-agent: wires opted-in containers and keeps tunnels and FRR in step with the stack's pairings."""

# The product's one version: the agent wheel (hostagent/pyproject.toml reads it from here)
# and every command's --version (overlay-agent, python -m infra.plan|verify|preflight, lab).
__version__ = "0.1.0"

# The exit status every command of the product follows (docs/cli.md); argparse already
# exits 2 on a usage error, so bad input is 2 as well: one line on stderr, no traceback.
EXIT_OK = 0
EXIT_FAILED = 1  # a check failed: unhealthy, violations, drift, a crashed task
EXIT_BAD_INPUT = 2  # bad input or usage, or something the command needs could not be asked
EXIT_STATUS = (
    "exit status: 0 ok; 1 a check failed (unhealthy, violations, drift) or the work did not "
    "complete; 2 bad input or usage (one line on stderr), or a dependency could not be asked"
)
