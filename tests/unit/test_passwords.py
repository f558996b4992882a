"""The program and the agent accept exactly the same BGP passwords (the rule is checked when the program runs)."""

from __future__ import annotations

import pytest

from infra.passwords import password_problem
from overlay_agent import frr as agent_frr
from overlay_agent.errors import ConfigError

CANDIDATES = [
    "",
    "a",
    "a" * 80,
    "a" * 81,
    "é" * 40,
    "é" * 41,
    "a" * 78 + "é",
    "a" * 79 + "é",
    "with space",
    "tab\there",
    "new\nline",
    "bell\x07",
    "nbsp\u00a0",
    "ok-P@ss!#$%^&*()",
    "ünïcödé",
    "zero\u200bwidth",
    "x" * 200,
]


@pytest.mark.parametrize("password", CANDIDATES, ids=range(len(CANDIDATES)))
def test_program_and_agent_agree(password):
    text = f" neighbor HOSTS password {agent_frr.PLACEHOLDER}\n"
    try:
        agent_frr.fill_password(text, password)
        agent_ok = True
    except ConfigError:
        agent_ok = False
    assert (password_problem(password) is None) == agent_ok


def test_the_limit_is_the_kernels():
    from infra.passwords import TCP_MD5SIG_MAXKEYLEN

    assert TCP_MD5SIG_MAXKEYLEN == agent_frr.TCP_MD5SIG_MAXKEYLEN == 80


def test_the_message_never_holds_the_password():
    assert "hunter 2" not in password_problem("hunter 2")
