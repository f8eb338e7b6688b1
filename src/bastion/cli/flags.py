"""``--help`` shows no value type for a flag.

Typer renders every option's type beside it, flags included (``--json <bool>``), which reads as
if the flag took a value. :func:`hide_flag_types` makes a flag's type column empty; options that
take a value keep theirs (``--k <int range>``). It changes how Typer's option class renders its
type in help, once, for every command (the built-in ``--help`` included).
"""
from __future__ import annotations

from typing import Any

from typer.core import TyperOption


def hide_flag_types() -> None:
    """Make flags (``--json``, ``--accept``, ``--stream/--no-stream``, ``--help``) show no type."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flag_types", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        return shown(self, ctx)

    display_type_rich.hides_flag_types = True  # type: ignore[attr-defined]  # marks the wrapper: wrap once
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # see the module docstring
