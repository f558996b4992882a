"""rtnetlink constants and error translation shared by the agent's netlink users
(container wiring, tunnels, kernel GRE)."""

from __future__ import annotations

import os

from .errors import NetlinkError

IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h: no duplicate address detection
MAIN_TABLE = 254  # RT_TABLE_MAIN, include/uapi/linux/rtnetlink.h


def nl_error(exc: BaseException, request: str) -> NetlinkError:
    """A pyroute2 NetlinkError or OSError as the agent's NetlinkError: `<request>: <strerror>`,
    with the errno kept for callers that branch on it (ENOENT, EEXIST, ESRCH)."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    text = os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)
    return NetlinkError(f"{request}: {text}", errno=code, request=request)
