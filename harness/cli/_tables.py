"""Tables that fit the terminal without cutting names: `bench results` and `bench list`.

Names (tasks, encoders, reducers) are never cut with an ellipsis: a name column is at least as wide as its
longest word and wraps between words, and the default view keeps the columns people compare (the rest are
under ``--wide``, ``--format csv`` or ``--json``). Numbers never wrap. ``--wide`` prints every column at its
natural width, whatever the terminal's (a log or a pipe gets the same).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["print_table", "results_rows"]


_FOLD_AT = 12  # free text is not squeezed below this (or its longest word): a column is dropped instead


def _widths(columns: Sequence[str], texts: Sequence[Sequence[str]], names: Sequence[str], numbers: Sequence[str],
            width: int) -> list[int] | None:
    """Column widths that fit ``width``: each column at its natural width, the widest shrinkable one narrowed
    first; numbers never shrink, names not below their longest word, free text (licences, URLs) not below
    `_FOLD_AT` or its longest word. None when even the narrowest layout does not fit (3 characters between
    columns: padding and divider)."""
    natural, least = [], []
    for i, col in enumerate(columns):
        cells = [col, *(row[i] for row in texts)]
        longest_line = max(len(c) for c in cells)
        longest_word = max(len(w) for c in cells for w in (c.split() or [""]))
        natural.append(longest_line)
        least.append(longest_line if col in numbers else longest_word if col in names
                     else min(longest_word, _FOLD_AT))
    room = width - 3 * (len(columns) - 1)
    widths = list(natural)
    while sum(widths) > room:
        i = max(range(len(widths)), key=lambda j: widths[j] - least[j])
        if widths[i] <= least[i]:
            return None
        widths[i] -= 1
    return widths


def _table(columns: Sequence[str], texts: Sequence[Sequence[str]], title: str | None, numbers: Sequence[str],
           widths: Sequence[int] | None):  # noqa: ANN202 - a rich Table
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, col in enumerate(columns):
        fixed = {} if widths is None else {"width": widths[i]}
        table.add_column(col, justify="right" if col in numbers else "left", overflow="fold",
                         no_wrap=col in numbers, **fixed)
    for row in texts:
        table.add_row(*row)
    return table


_MARK = "†"  # footnote marker of a name word too long for its column (never cut: written out under the table)


def _footnote(texts: list[list[str]], cols: Sequence[int], marks: dict[str, str]) -> bool:
    """Replace the longest word of the ``cols`` columns (an option word with ``=`` first) by a footnote marker
    in every cell it appears in; False when no word is longer than its marker would be."""
    words = {w for row in texts for i in cols for w in row[i].split() if not w.startswith(_MARK)}
    if not words:
        return False
    word = max(words, key=lambda w: ("=" in w, len(w)))
    mark = f"{_MARK}{len(marks) + 1}"
    if len(word) <= len(mark) + 2:
        return False
    marks[word] = mark
    for row in texts:
        for i in cols:
            row[i] = " ".join(mark if w == word else w for w in row[i].split())
    return True


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
                names: Sequence[str] = (), numbers: Sequence[str] = (), optional: Sequence[str] = (),
                wide: bool = False) -> list[str]:
    """A rich table of ``rows``: ``names`` columns wrap only between words, ``numbers`` are right-aligned and
    never wrap. Where the terminal is too narrow even so, ``optional`` columns are left out, first ones first,
    then the longest words of name columns (option words such as ``gene_sets=FILE`` first) are written under
    the table as footnotes (``†1 gene_sets=FILE``), so no name is ever cut. Returns the columns left out.
    ``wide`` prints every column at the table's natural width."""
    from rich.markup import escape
    from rich.measure import Measurement

    from stbench.cli._console import console

    out = console()
    texts = [[str(v) for v in row] for row in rows]
    if wide:
        table = _table(columns, [[escape(c) for c in row] for row in texts], title, numbers, None)
        width = out.width
        out.width = max(width, Measurement.get(out, out.options.update(max_width=10_000), table).maximum)
        try:
            out.print(table)
        finally:
            out.width = width
        return []
    keep, dropped = list(range(len(columns))), []

    def fit() -> list[int] | None:
        return _widths([columns[i] for i in keep], [[r[i] for i in keep] for r in texts], names, numbers, out.width)

    widths = fit()
    for col in optional:
        if widths is not None:
            break
        if col in columns and columns.index(col) in keep:
            keep.remove(columns.index(col))
            dropped.append(col)
            widths = fit()
    marks: dict[str, str] = {}
    name_cols = [i for i in keep if columns[i] in names]
    while widths is None and _footnote(texts, name_cols, marks):
        widths = fit()
    out.print(_table([columns[i] for i in keep], [[escape(r[i]) for i in keep] for r in texts], title, numbers, widths))
    for word, mark in marks.items():
        out.print(escape(f"{mark} {word}"), soft_wrap=True)
    return dropped


def _fmt(x: Any, digits: int = 4) -> str:
    return "nan" if x is None or x != x else f"{x:.{digits}f}"


def _reducer_label(name: str, options: str, task: str, encoder: str) -> str:
    from stbench.reducers import reducers

    try:
        label = reducers.get(name).variant_label(json.loads(options), task=task, encoder=encoder)
    except Exception:  # noqa: BLE001 - a plugin no longer installed: its raw options
        label = options if options not in ("{}", "") else ""
    return f"{name} {label}".strip()


_PROTOCOL = (("alpha_rule", "alpha"), ("solver", "solver"), ("gene_rule", "genes"), ("seed", "seed"))


def results_rows(df: Any) -> tuple[list[str], list[list[Any]], list[str]]:
    """The summary view of `Catalog.summary` rows: (columns, rows, notes). Protocol settings shared by every
    row go to a note; those that differ get a narrow column each (``alpha``: hest, cv); status only shows when
    some row is not complete."""
    from stbench.encoders.weights import encoder_label

    records = df.to_dicts()
    varying = [(key, label) for key, label in _PROTOCOL if len({str(r.get(key)) for r in records}) > 1]
    shared = [f"{label} {records[0].get(key)}" for key, label in _PROTOCOL if (key, label) not in varying]
    show_status = any(r.get("status") != "complete" for r in records)
    columns = ["task", "encoder", "reducer"] + [label for _, label in varying] + ["folds", "PCC mean ± std", "MSE",
                                                                                "mean MSE", "NaN"]
    columns += ["status"] if show_status else []
    rows = []
    for r in records:
        task = r["task"] + ("*" if r.get("synthetic") else "")
        encoder = encoder_label(r["encoder"], r.get("weights_fingerprint"))
        row = [task, encoder, _reducer_label(r["reducer"], r.get("reducer_options") or "{}", r["task"], r["encoder"])]
        row += [str(r.get(key)) for key, _ in varying]
        row += [r["folds"], f"{_fmt(r['pcc_mean'])} ± {_fmt(r['pcc_std'])}", _fmt(r["mse_mean"], 3),
                _fmt(r.get("mse_baseline"), 3), r["n_nan"]]
        row += [r.get("status")] if show_status else []
        rows.append(row)
    notes = [f"all rows: {', '.join(shared)}"] if shared else []
    notes.append("mean MSE: the MSE of predicting each gene's training mean")
    return columns, rows, notes
