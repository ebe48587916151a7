"""The command groups of `bud`, built so that `--help` answers at once: help is plain text (rich's help formatter
alone takes about a second to import; tables and progress still use rich, loaded by the commands that print them),
and a group's own --help flag, when not given, is not run through typer's pydantic-based coercion (importing
pydantic for it costs more than the rest of `bud endpoints --help`)."""

from __future__ import annotations

import typer
from typer.core import TyperGroup


class _Group(TyperGroup):
    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False  # a bool: typer skips coercing bool flags that already are bools
        return option


def command_group(help: str, **options) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, cls=_Group, **options)
