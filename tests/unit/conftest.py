"""Fixtures shared by the unit tests (their fakes: tests/support/fakes.py)."""

from __future__ import annotations

import pytest

from tests.support import fakes


@pytest.fixture
def pairing_world(tmp_path):
    """(sync, source, backend, frr, state dir): a pairing sync wired to in-memory fakes."""
    return fakes.pairing_world(tmp_path)
