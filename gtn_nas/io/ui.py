"""Terminal output: rich progress bars and tables, silenced by --quiet or --json.

The library reports through a ``Reporter`` it is given; it never prints directly, so scripts can
run it silently and the CLI decides what the user sees. Everything goes to stderr except the
``--json`` summary, which the CLI prints to stdout.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Reporter:
    def __init__(self, quiet: bool = False, json_mode: bool = False):
        self.enabled = not (quiet or json_mode)
        self.console = Console(stderr=True, quiet=not self.enabled)

    def info(self, message: str) -> None:
        self.console.print(message)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: int, completed: int = 0) -> Iterator["Bar"]:
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=self.console, disable=not self.enabled,
                      transient=False) as prog:
            task = prog.add_task(description, total=total, completed=completed, info="", rate="")
            yield Bar(prog, task)

    def table(self, title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        if not rows:
            return
        columns = list(columns or rows[0].keys())
        t = Table(title=title)
        for c in columns:
            t.add_column(c, justify="right" if isinstance(rows[0].get(c), (int, float)) else "left")
        for r in rows:
            t.add_row(*(_fmt(r.get(c, "")) for c in columns))
        self.console.print(t)


    def summary(self, title: str, values: Mapping[str, Any]) -> None:
        """A two-column key/value table: readable in a narrow terminal, unlike one wide row."""
        t = Table(title=title, show_header=False)
        t.add_column("key", style="bold")
        t.add_column("value", overflow="fold")
        for k, v in values.items():
            t.add_row(k, _fmt(v))
        self.console.print(t)


class Bar:
    """One progress task: ``update(advance, rate=..., **fields)`` shows fields as k=v."""

    def __init__(self, prog: Progress, task):
        self._prog, self._task = prog, task

    def update(self, advance: int = 1, rate: str | None = None, **fields: Any) -> None:
        kw: dict[str, Any] = {}
        if fields:
            kw["info"] = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        if rate is not None:
            kw["rate"] = rate
        self._prog.update(self._task, advance=advance, **kw)
