"""The agent's shared plumbing: atomic root-only writes, netlink error lines, text tables."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

from lab.poll import Timeout, wait_until

from overlay_agent.errors import NetlinkError
from overlay_agent.fsutil import atomic_write_json
from overlay_agent.rtnl import nl_error
from overlay_agent.texttable import text_table


def test_atomic_write_json_is_root_only_and_replaces(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json(path, {"a": 1})
    path.chmod(0o644)  # an older file with a wider mode
    atomic_write_json(path, {"a": 2}, indent=1)
    assert json.loads(path.read_text()) == {"a": 2}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary file left


def test_nl_error_names_request_and_keeps_errno():
    err = nl_error(PyNetlinkError(errno.EEXIST, "File exists"), "route replace 10.0.0.1/32")
    assert isinstance(err, NetlinkError) and err.errno == errno.EEXIST and err.request == "route replace 10.0.0.1/32"
    assert str(err) == f"route replace 10.0.0.1/32: {os.strerror(errno.EEXIST)}"
    assert str(nl_error(OSError("socket closed"), "dump links")) == "dump links: socket closed"


def test_text_table_pads_all_but_the_last_column():
    lines = text_table(("A", "LONGER", "NOTE"), [("xx", 1, "free text"), ("y", 22, "")], rule=True)
    assert lines == ["A   LONGER  NOTE", "--  ------  ----", "xx  1       free text", "y   22"]
    assert text_table(("ONE", "TWO"), []) == ["ONE  TWO"]


def test_wait_until_returns_the_value_and_names_what_timed_out():
    calls = iter([0, None, "ready"])
    assert wait_until(lambda: next(calls), 5, 0.001) == "ready"

    def flaky():
        raise ConnectionError("not up yet")

    with pytest.raises(Timeout, match=r"the daemon not reached within 0.05 s \(last error: not up yet\)"):
        wait_until(flaky, 0.05, 0.01, "the daemon", ignore=(ConnectionError,))
    with pytest.raises(KeyError):  # an error not ignored is not swallowed
        wait_until(lambda: {}["x"], 1, 0.01)

    class Mine(Exception):
        pass

    with pytest.raises(Mine, match="^never not reached"):
        wait_until(lambda: False, 0.01, 0.005, "never", error=Mine)
