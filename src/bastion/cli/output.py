"""Human output by default, JSON for scripts; errors go to stderr with exit code 2.

Untrusted text is printed as plain text. Document text, titles, paths, answers and quotes, queries,
file names, user, group and key names, audit targets and error messages that quote any of them come
from members, documents and files, so nothing printed here is read as Rich markup (``[/x]`` is shown
as ``[/x]``, never parsed), and control characters are shown as Python-style escapes instead of
reaching the terminal: C0 (``\\x1b``, ``\\x07``; ``\\n``, ``\\r``, ``\\t``), DEL, C1 (``\\x9b``) and the
bidi overrides and isolates (``\\u202e``). ``\\n`` and ``\\t`` are kept only where a text is printed
as several lines (an answer); a field (a path, a table cell, a query) is one line.

How the CLI does it, so that a new command is safe without remembering to:

- ``console`` and ``err_console`` are :class:`PlainConsole`: markup, emoji codes and highlighting
  are off, every string they render is passed through :func:`clean`, and every text segment is
  checked again before it is written (whatever a renderable holds).
- Styled lines of our own are :class:`rich.text.Text` built with :func:`styled` (parts are plain
  strings or ``(string, style)`` pairs); a single untrusted value is :func:`plain`.
- :class:`Table` (use it instead of ``rich.table.Table``) makes every ``str`` cell one plain line.
- JSON (:func:`emit_json`, :func:`json_line`) keeps its content; control characters, including
  those ``json.dumps(ensure_ascii=False)`` would pass through (DEL, C1, bidi), are ``\\uXXXX``.
"""
from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

import typer
from rich.console import Console, ConsoleOptions, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.segment import Segment
from rich.table import Table as _RichTable
from rich.text import Text

from bastion.core.errors import BastionError

_BIDI = "\u202a-\u202e\u2066-\u2069"
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # keeps \t and \n
_UNSAFE_JSON = re.compile(f"[\x7f-\x9f{_BIDI}\u2028\u2029]")  # what json.dumps(ensure_ascii=False) leaves raw
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match) -> str:
    ch = m.group()
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def clean(value: Any, *, multiline: bool = False) -> str:
    """``value`` as a string whose control characters are visible escapes (``\\x1b``, ``\\u202e``).

    One line unless ``multiline``: then ``\\n`` and ``\\t`` stay (``\\r`` is always escaped: it would
    let a line overwrite itself). Markup is not touched: print the result as plain text.
    """
    s = value if isinstance(value, str) else str(value)
    return (_UNSAFE_LINES if multiline else _UNSAFE_LINE).sub(_escape, s)


def plain(value: Any, style: str = "", *, multiline: bool = False) -> Text:
    """An untrusted value as a :class:`Text`: never parsed as markup, control characters escaped."""
    return Text(clean(value, multiline=multiline), style=style)


def styled(*parts: str | tuple[str, str] | Text, multiline: bool = False) -> Text:
    """One line of our own output from plain parts: ``styled(("error:", "bold red"), " ", message)``.

    A ``str`` part is printed as it is (escaped by :func:`clean`), a ``(str, style)`` pair with that
    style, a :class:`Text` part (from :func:`plain` or :func:`styled`) as built.
    """
    out = Text()
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(clean(part[0], multiline=multiline), style=part[1])
        else:
            out.append(clean(part, multiline=multiline))
    return out


class PlainConsole(Console):
    """A :class:`Console` that prints strings as plain text: no markup, no emoji codes, no
    highlighting, control characters escaped; a last check on every text segment it writes
    escapes control characters that arrive inside a ready-made renderable."""

    def __init__(self, **kwargs: Any):
        kwargs.update(markup=False, emoji=False, highlight=False)
        super().__init__(**kwargs)

    def render_str(self, text: str, *, style="", justify=None, overflow=None, emoji=None, markup=None,
                   highlight=None, highlighter=None) -> Text:
        return super().render_str(clean(text, multiline=True), style=style, justify=justify, overflow=overflow,
                                  emoji=False, markup=False, highlight=highlight, highlighter=highlighter)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            # control segments (cursor moves of a progress bar) are Rich's own; style codes are added later
            if seg.control is None and _UNSAFE_LINES.search(seg.text):
                yield Segment(clean(seg.text, multiline=True), seg.style)
            else:
                yield seg


class Table(_RichTable):
    """:class:`rich.table.Table` whose ``str`` cells are plain, one-line text (see :func:`plain`)."""

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(plain(r) if isinstance(r, str) else r for r in renderables), **kwargs)


console = PlainConsole()
err_console = PlainConsole(stderr=True)


def json_safe(text: str) -> str:
    """JSON text with DEL, C1 and bidi controls written as ``\\uXXXX`` (same content; they occur only
    inside strings, and ``json.dumps`` already escapes C0)."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_line(data: Any, **kwargs: Any) -> str:
    return json_safe(json.dumps(data, ensure_ascii=False, default=str, **kwargs))


def emit_json(data: Any) -> None:
    sys.stdout.write(json_line(data, indent=2) + "\n")


class JsonSafeWriter:
    """Wraps a stream that receives JSON text (e.g. JSON Lines) and applies :func:`json_safe`."""

    def __init__(self, out: IO[str]):
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(json_safe(text))

    def flush(self) -> None:
        self._out.flush()


def error(message: Any) -> None:
    """``error: message`` on stderr, the message plain (it may quote a bad value from a file or user)."""
    err_console.print(styled(("error:", "bold red"), " ", plain(message, multiline=True)))


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except BastionError as exc:
        error(exc)
        raise typer.Exit(2) from None


def _plain_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(clean("".join(traceback.format_exception(exc_type, exc, tb)), multiline=True))


def install_excepthook() -> None:
    """An unexpected error's traceback quotes values too: print it with control characters escaped."""
    sys.excepthook = _plain_excepthook


@contextmanager
def sync_progress(enabled: bool) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A progress bar on stderr: documents scanned and chunks embedded."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, advance: int, total: int | None) -> None:
            label = {"scan": "documents", "embed": "chunks embedded"}.get(stage, stage)
            if stage not in tasks:
                tasks[stage] = bar.add_task(clean(label), total=total)
            elif total is not None:
                bar.update(tasks[stage], total=total, completed=0)
            if advance:
                bar.advance(tasks[stage], advance)

        yield update
