"""The browser test's screenshot measure (tests/helpers/screenshot.py) on PNGs made here: the decoder undoes all five
PNG filters, and the measure counts the lines of text between the containers table's header and its bottom rule,
and says "empty" for a table without rows or a page without the table."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.helpers.screenshot import MARK, RULE, _paeth, measure_table, read_png

WHITE, ZEBRA, INK, OTHER = (255, 255, 255), (246, 247, 249), (29, 35, 43), (236, 238, 241)


def png(rows: list[list[tuple[int, int, int]]], alpha: bool) -> bytes:
    """An 8-bit RGB(A) PNG whose rows use the filters 0, 1, 2, 3, 4 in turn."""
    bpp = 4 if alpha else 3
    width = len(rows[0])
    raw, prev = bytearray(), bytes(width * bpp)
    for y, pixels in enumerate(rows):
        line = bytes(v for p in pixels for v in (*p, 255)[:bpp])
        kind = y % 5
        out = bytearray()
        for i, x in enumerate(line):
            left = line[i - bpp] if i >= bpp else 0
            up = prev[i]
            upleft = prev[i - bpp] if i >= bpp else 0
            predictor = (0, left, up, (left + up) >> 1, _paeth(left, up, upleft))[kind]
            out.append((x - predictor) & 0xFF)
        raw += bytes([kind]) + out
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 6 if alpha else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(
        b"IEND", b"")


def page(lines: int, width: int = 40, table: bool = True) -> list[list[tuple[int, int, int]]]:
    """A heading of text, the table's header band (text on MARK), ``lines`` rows of text on zebra stripes, the
    bottom rule (RULE), then another table (OTHER header) with text."""
    def text_row(bg: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        return [INK if 4 <= x < 14 or 20 <= x < 26 else bg for x in range(width)]

    rows = [[WHITE] * width, text_row(WHITE), [WHITE] * width]
    if table:
        rows += [[MARK] * width, text_row(MARK), [MARK] * width]  # the header
        for n in range(lines):
            bg = ZEBRA if n % 2 else WHITE
            rows += [[bg] * width, text_row(bg), text_row(bg), [bg] * width]
        rows += [[RULE] * width] * 2  # the bottom rule
    rows += [[WHITE] * width, [OTHER] * width, text_row(OTHER), [WHITE] * width, text_row(WHITE)]
    return rows


@pytest.mark.parametrize("alpha", [False, True])
def test_the_decoder_undoes_every_filter(alpha: bool) -> None:
    rows = page(3)
    image = read_png(png(rows, alpha))
    assert (image.width, image.height, image.channels) == (40, len(rows), 4 if alpha else 3)
    assert all(image.pixel(x, y)[:3] == rows[y][x] for y in range(len(rows)) for x in range(40))


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("lines", [1, 2, 7])
def test_a_line_of_text_per_table_row(alpha: bool, lines: int) -> None:
    measure = measure_table(read_png(png(page(lines), alpha)))
    assert measure.found and measure.lines == lines and not measure.empty, measure
    assert measure.ink_rows == 2 * lines


def test_a_table_without_rows_is_empty() -> None:
    measure = measure_table(read_png(png(page(0), False)))
    assert measure.found and measure.lines == 0 and measure.empty, measure


def test_a_table_longer_than_the_screenshot_counts_what_is_on_it() -> None:
    rows = page(5)
    cut = rows[:-5 - 2 - 4]  # the last table row, the rule and what follows are below the window
    measure = measure_table(read_png(png(cut, False)))
    assert measure.lines == 4 and measure.bottom == len(cut), measure


def test_a_page_without_the_table_is_empty() -> None:
    measure = measure_table(read_png(png(page(0, table=False), True)))
    assert not measure.found and measure.empty
    assert str(measure) == "no containers table on the screenshot"


def test_not_a_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        read_png(b"GIF89a")
