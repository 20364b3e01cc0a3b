"""Command-line options shared by the ``vidpress`` commands: choosing presses by name with their arguments."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

PressOption = Annotated[Optional[list[str]], typer.Option("--press", help="Press name (repeat to compose; see `vidpress presses`).")]
PressArgOption = Annotated[
    Optional[list[str]],
    typer.Option("--press-arg", help="Press parameter k=v (or NAME.k=v when several presses are given)."),
]


def build_presses(names: list[str] | None, args: list[str] | None) -> list:
    """Presses from CLI names and ``k=v`` / ``NAME.k=v`` arguments."""
    from vidpress.presses import press_from_name

    names = names or []
    per_press: dict[str, dict[str, str]] = {name: {} for name in names}
    for item in args or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--press-arg must look like k=v, got {item!r}")
        target, dot, key = key.rpartition(".")
        if not dot:
            if len(names) != 1:
                raise typer.BadParameter(f"--press-arg {item!r}: say which press, as NAME.{key}=...")
            target = names[0]
        if target not in per_press:
            raise typer.BadParameter(f"--press-arg {item!r} names press {target!r}, which is not among --press {names}")
        per_press[target][key] = value
    try:
        return [press_from_name(name, per_press[name]) for name in names]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
