"""Records of a device file as D-REC users write it: comma or pipe separated, quoted with
straight or typographic quotes.

The rules, in the order the reader applies them:
1. The separator is read from the header line: `|` if the header holds one, else `,`.
2. Line ends are `\\n`, `\\r\\n` or `\\r`; a record's line is the one it starts on.
3. A cell whose first non-blank character is a quote is quoted: `"` closes with `"`
   (`""` inside is one `"`), `“` with `”`, `‘` with `’` (a lone `”` or `’` may open too,
   as some editors write both ends the same). A closing quote counts only when what
   follows it, blanks aside, is the separator or the end of the line; elsewhere it is
   text, so `“the “best” site”` keeps its inner quotes. Inside quotes the separator and
   line ends are text.
4. Cells are stripped of surrounding blanks; a quoted cell keeps its inner ones.
5. A cell over MAX_CELL_CHARS, or a quote never closed, refuses the file naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

MAX_CELL_CHARS: Final = 131_072  # what Python's csv module allows by default
PIPE: Final = "|"
COMMA: Final = ","
# Opening quote → the characters that close it.
QUOTES: Final = {
    '"': ('"',),
    "\u201c": ("\u201d", "\u201c"),  # “ … ” (or “ … “)
    "\u201d": ("\u201d",),  # ” … ”
    "\u2018": ("\u2019", "\u2018"),  # ‘ … ’ (or ‘ … ‘)
    "\u2019": ("\u2019",),  # ’ … ’
}
_BLANKS = re.compile(r"[ \t]*")
_ANY_QUOTE = re.compile("[" + "".join(QUOTES) + "]")
# The first closing quote of each opener, found in one scan (not one find per closer,
# which would rescan the rest of the file for a closer that never comes).
_CLOSERS = {opener: re.compile("[" + "".join(closers) + "]") for opener, closers in QUOTES.items()}


class CsvSyntaxError(ValueError):
    """The file cannot be read past `line`; `reason` says why."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def separator_of(text: str) -> str:
    """`|` when the header line (the first line) holds one, else `,`."""
    end = len(text)
    for newline in ("\n", "\r"):
        found = text.find(newline)
        if found != -1:
            end = min(end, found)
    return PIPE if PIPE in text[:end] else COMMA


def records(text: str, separator: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each record of `text`, blank lines included (as `[""]`)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    delimiter = separator or separator_of(text)
    unquoted = re.compile(f"[^{re.escape(delimiter)}\n]*")
    size = len(text)
    position = 0
    line = 1
    cells: list[str] = []
    record_line = 1
    while position < size:
        if not cells:  # a record starts: a line without quotes is split at once
            end_of_line = text.find("\n", position)
            end_of_line = size if end_of_line == -1 else end_of_line
            if _ANY_QUOTE.search(text, position, end_of_line) is None:
                parts = [cell.strip(" \t") for cell in text[position:end_of_line].split(delimiter)]
                if max(map(len, parts)) > MAX_CELL_CHARS:
                    raise CsvSyntaxError(line, f"a cell is longer than {MAX_CELL_CHARS} characters")
                yield line, parts
                position = end_of_line + 1
                line += 1
                record_line = line
                continue
        start = _BLANKS.match(text, position).end()  # type: ignore[union-attr]
        opener = text[start] if start < size else ""
        if opener in QUOTES:
            cell, end = _quoted(text, start, opener, delimiter, line)
        else:
            match = unquoted.match(text, position)
            assert match is not None  # the pattern matches the empty string
            cell, end = match.group().strip(" \t"), match.end()
        if len(cell) > MAX_CELL_CHARS:
            raise CsvSyntaxError(line, f"a cell is longer than {MAX_CELL_CHARS} characters")
        line += text.count("\n", position, end)
        position = end
        cells.append(cell)
        if position < size and text[position] == delimiter:
            position += 1
            if position == size:  # a trailing separator: one more, empty cell
                cells.append("")
            continue
        yield record_line, cells
        cells = []
        position += 1  # past the "\n" (or the end)
        line += 1
        record_line = line
    if cells:
        yield record_line, cells


def _quoted(text: str, start: int, opener: str, delimiter: str, line: int) -> tuple[str, int]:
    """The cell opened at `start` by `opener`, and the position after its closing quote
    (and the blanks after it)."""
    closer = _CLOSERS[opener]
    parts: list[str] = []
    position = start + 1
    while True:
        found = closer.search(text, position)
        if found is None:
            raise CsvSyntaxError(line, f"the quote {opener} opened here is never closed")
        index = found.start()
        if opener == '"' and text.startswith('""', index):
            parts.append(text[position : index + 1])
            position = index + 2
            continue
        after = _BLANKS.match(text, index + 1).end()  # type: ignore[union-attr]
        if after >= len(text) or text[after] in (delimiter, "\n"):
            parts.append(text[position:index])
            return "".join(parts), after
        parts.append(text[position : index + 1])
        position = index + 1
