"""The agent's one error hierarchy; I/O shims translate library errors into these at the boundary."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """Bad input: a label, a parameter, a bootstrap setting. The message is one line for a person."""


class NetlinkError(AgentError):
    """A netlink request failed; keeps the kernel's errno."""

    def __init__(self, message: str, *, errno: int | None = None, request: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.request = request


class CommandError(AgentError):
    """An external command (vtysh, frr-reload) failed; keeps command, exit code and stderr."""

    def __init__(self, message: str, *, cmd: list[str] | None = None, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.cmd = cmd or []
        self.returncode = returncode
        self.stderr = stderr


class DockerError(AgentError):
    """The Docker API failed or returned something unusable."""


class ParameterError(AgentError):
    """The parameter store (SSM) could not be read."""
