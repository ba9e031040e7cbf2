"""A progress node, as GET /status/<key> answers it, drawn for a terminal with rich.

    render_tree(node, now_ms=None) -> a rich Table, one row per loaded node:

    node            progress                  % status   eta     elapsed children · msg
    _portal.job123  ━━━━━━━━╺━━━━━━━━━━━  41.6%          ~2m 05s 1m 02s  [1 running · 1 finished] Staging input
    ├── stage_input ━━━━━━━━━━━━━━━━━━━━ 100.0% finished         took 9s staged
    ├── qrprocess   ━━━╺━━━━━━━━━━━━━━━━  16.0% running  ~1d 01h 1h 02m  [8 running · 2 none] Running QR process
    └── … 7 more

The root row shows its full key, every other row the last segment of its key
(and the producer's ``name`` beside it when there is one).  Times are shown
on the server's clock: pass *now_ms* (the ``_now`` of a payload, or a clock
corrected by it); without it the node's own ``_now`` is used, then the local
clock.
"""
from __future__ import annotations

import math
import time

from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

#: How each known status is shown; any other status is shown plainly.
STATUS_STYLES = {
    "waiting": "blue",
    "running": "cyan",
    "paused": "yellow",
    "finished": "green",
    "failed": "bold red",
    "canceled": "magenta",
}
#: The order of the children's counts by status (then any other, then "none").
COUNT_ORDER = ("running", "waiting", "paused", "finished", "failed", "canceled")

BAR_WIDTH = 20


def human_duration(ms: float, round_up: bool = False) -> str:
    """A duration in ms as people read it: 42s, 3m 07s, 2h 05m, 3d 04h.

    With *round_up* a fraction of a second counts as a whole one (an ETA
    half a second away reads "1s", not "0s")."""
    seconds = math.ceil(ms / 1000) if round_up else math.floor(ms / 1000)
    seconds = max(0, seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def percent(progress: float) -> str:
    """41.6% (rounded down: 99.96 % is not yet 100.0%)."""
    if progress >= 1:
        return "100.0%"
    return f"{math.floor(max(progress, 0.0) * 1000) / 10:.1f}%"


def status_text(status) -> Text:
    if status is None:
        return Text("")
    status = str(status)
    return Text(status, style=STATUS_STYLES.get(status, ""))


def counts_text(counts) -> Text:
    """'2 running · 1 waiting · 3 none' from a node's ``_status_counts``."""
    if not isinstance(counts, dict) or not counts:
        return Text("")
    names = [s for s in COUNT_ORDER if counts.get(s)]
    names += sorted(s for s in counts if s not in COUNT_ORDER and s != "none" and counts.get(s))
    if counts.get("none"):
        names.append("none")
    out = Text()
    for i, name in enumerate(names):
        if i:
            out.append(" · ", style="dim")
        out.append(f"{counts[name]} ", style="bold")
        out.append(name, style=STATUS_STYLES.get(name, "dim" if name == "none" else ""))
    return out


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)  # NaN is no number to show


def _eta_text(node: dict, now: int) -> Text:
    eta = _number(node.get("eta"))
    if eta is None:
        return Text("")
    left = eta - now
    return Text("~" + human_duration(left, round_up=True) if left > 0 else "any moment", style="cyan")


def _elapsed_text(node: dict, now: int) -> Text:
    """How long the node has run (from run_time, else start_time), or took."""
    began = _number(node.get("run_time"))
    if began is None:
        return Text("")
    ended = _number(node.get("end_time"))
    if ended is not None:
        return Text("took " + human_duration(ended - began), style="dim")
    return Text(human_duration(now - began))


def _msg_text(msg, counts: Text) -> Text:
    """On parents their children's counts by status first (they matter most
    when the line is cut short), then the node's msg."""
    text = Text()
    if counts:
        text.append("[", style="dim")
        text.append_text(counts)
        text.append("] ", style="dim")
    text.append(msg if isinstance(msg, str) else "" if msg is None else str(msg))
    return text


def _label(node: dict, is_root: bool) -> Text:
    key = str(node.get("key", ""))
    text = Text(key if is_root else key.rsplit(".", 1)[-1], style="bold" if "_children" in node else "")
    name = node.get("name")
    if isinstance(name, str) and name and name != text.plain:
        text.append(" " + name, style="dim italic")
    return text


def render_tree(node: dict, now_ms: int | None = None, max_children: int | None = None) -> Table:
    """The rows of *node* and its loaded children (``tasks``), as a rich Table.

    A parent whose children are not all loaded (paged, or past *max_children*)
    gets a last "… N more" row; one read without its children shows their
    counts by status only."""
    now = now_ms if now_ms is not None else node.get("_now")
    if _number(now) is None:
        now = int(time.time() * 1000)
    rows: list[list] = []

    def add(n: dict, guide: Text, is_root: bool) -> None:
        progress = _number(n.get("progress"))
        label = guide.copy()
        label.append_text(_label(n, is_root))
        msg = n.get("msg")
        rows.append([
            label,
            progress,
            Text(percent(progress) if progress is not None else ""),
            status_text(n.get("status")),
            _eta_text(n, now),
            _elapsed_text(n, now),
            _msg_text(msg, counts_text(n.get("_status_counts"))),
        ])

    def walk(n: dict, guide: str, is_root: bool, branch: str) -> None:
        add(n, Text(branch, style="dim"), is_root)
        tasks = n.get("tasks") or []
        shown = tasks if max_children is None else tasks[:max_children]
        total = n.get("_children_total")
        more = (total if isinstance(total, int) else len(tasks)) - len(shown) if tasks else 0
        for i, child in enumerate(shown):
            last = i == len(shown) - 1 and more <= 0
            walk(child, guide + ("    " if last else "│   "), False, guide + ("└── " if last else "├── "))
        if more > 0:
            rows.append([Text(guide + "└── ", style="dim") + Text(f"… {more} more", style="dim italic")])

    walk(node, "", True, "")
    return _table(rows)


#: (header, justify, most cells) of the columns; the message takes what is left.
_COLUMNS = (("node", "left", 48), ("progress", "left", BAR_WIDTH), ("%", "right", 6),
            ("status", "left", 16), ("eta", "left", 12), ("elapsed", "left", 12),
            ("children · msg", "left", None))


def _table(rows: list[list]) -> Table:
    """Every column as wide as its widest cell (within bounds), the message
    column taking the rest of the line: rich's own shrinking would squeeze
    short columns such as the percent to nothing first."""
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False, header_style="bold dim",
                  expand=True)
    for i, (header, justify, most) in enumerate(_COLUMNS):
        if most is None:  # the children and msg column
            table.add_column(header, justify=justify, no_wrap=True, overflow="ellipsis", ratio=1, min_width=3)
            continue
        if header == "progress":
            width = BAR_WIDTH
        else:
            width = max([len(header)] + [r[i].cell_len for r in rows if len(r) > i])
        table.add_column(header, justify=justify, no_wrap=True, overflow="ellipsis", width=min(width, most))
    for row in rows:
        if len(row) > 1:
            progress = row[1]
            row[1] = (ProgressBar(total=1.0, completed=min(max(progress, 0.0), 1.0), width=BAR_WIDTH)
                      if progress is not None else Text(""))
        table.add_row(*row)
    return table
