"""Plain-text tables for the commands' human output (`overlay-agent status`, `infra.verify`)."""

from __future__ import annotations

from typing import Iterable, Sequence


def text_table(head: Sequence[str], rows: Iterable[Sequence[object]], rule: bool = False) -> list[str]:
    """Lines of a table: columns padded to their widest cell and two spaces apart, the last
    column left unpadded (it holds free text such as errors); `rule` adds dashes under the head."""
    cells = [[str(v) for v in head]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head) - 1)] + [len(cells[0][-1])]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in cells]
    lines = [line.rstrip() for line in lines]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
