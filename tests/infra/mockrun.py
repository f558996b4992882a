"""The mock harness lives in infra/mockrun.py (the preflight uses it too); tests import it from here or there."""

from infra.mockrun import *  # noqa: F403 - this module re-exports the harness under its old name
