"""Tables the CLI prints. Names are what users type back into the next command, so a narrow terminal squeezes
or cuts every other column first but never a name."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def console():
    from rich.console import Console

    return Console(highlight=False)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]], whole: Sequence[str] = ("name",)) -> None:
    """Print rows under columns; the columns named in `whole` keep their full width."""
    from rich.markup import escape
    from rich.table import Table

    keep = [index for index, column in enumerate(columns) if column in whole]
    rows = [list(row) for row in rows]
    widths = {index: max([len(columns[index]), *(len(row[index]) for row in rows)]) for index in keep}
    table = Table()
    for index, column in enumerate(columns):
        if index in keep:
            table.add_column(column, no_wrap=True, min_width=widths[index])
        else:
            table.add_column(column)
    for row in rows:
        table.add_row(*(escape(cell) if index in keep else cell for index, cell in enumerate(row)))
    console().print(table)
