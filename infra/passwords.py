"""The rule a BGP (TCP MD5) password must meet, checked when the program runs; pure.

The agent applies the same rule before it writes the password into frr.conf
(hostagent/overlay_agent/frr.py, fill_password): each side keeps its own copy (the
agent is installed on instances without the program) and tests/unit/test_passwords.py
pins the two equal over a range of candidates. A password that breaks it would otherwise
be found only on the instances, as an FRR config no agent will apply.
"""

from __future__ import annotations

# Linux: TCP_MD5SIG_MAXKEYLEN (include/uapi/linux/tcp.h).
TCP_MD5SIG_MAXKEYLEN = 80
RULE = f"needs 1-{TCP_MD5SIG_MAXKEYLEN} printable characters without spaces"


def password_problem(password: str) -> str | None:
    """Why `password` cannot be a TCP MD5 key in FRR's `neighbor ... password`, or None.

    Whitespace or a newline would end the word FRR reads (and could inject configuration);
    the kernel holds at most 80 bytes. The message never contains the password.
    """
    if (
        not password
        or len(password.encode()) > TCP_MD5SIG_MAXKEYLEN
        or any(c.isspace() for c in password)
        or not password.isprintable()
    ):
        return f"unusable as a TCP MD5 key ({len(password)} characters; {RULE})"
    return None
