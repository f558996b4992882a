"""Thread-scoped namespace switching: a socket and /proc/sys files opened inside another network namespace."""

from __future__ import annotations

import ctypes
import os
import socket
from typing import IO

from .errors import NetlinkError

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def open_in(nsfd: int, sysctls: tuple[str, ...]) -> tuple[socket.socket, list[IO[str]]]:
    """A netlink socket in the namespace of `nsfd`, and its sysctl files opened for writing.

    setns(2) on CLONE_NEWNET moves only the calling thread, and a socket (like an open
    /proc/sys/net file) stays bound to the namespace it was opened in, so the thread goes
    back at once. This avoids pyroute2's netns support, which forks a child per socket
    (milliseconds, and fork in a threaded process), and its pushns/popns, which switch
    through a process-wide stack.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    files: list[IO[str]] = []
    try:
        if _libc.setns(nsfd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise NetlinkError(f"setns into container: {os.strerror(code)}", errno=code, request="setns")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
            for path in sysctls:
                files.append(open(path, "w"))
            return sock, files
        except BaseException:
            for fh in files:
                fh.close()
            raise
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                # A thread left in a container's namespace would wire the wrong host.
                os.abort()
    finally:
        os.close(own)
