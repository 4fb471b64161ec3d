"""Chromium for the browser tests, and a measure of the containers table in a PNG screenshot of the status page.

Standard library only: the PNG is decoded with ``zlib`` and ``struct`` (8-bit RGB/RGBA, not interlaced: what
Chromium writes). The measure finds the containers table by its header colour and its bottom rule's
(``exporters.web.status_assets.TABLE_MARK`` and ``TABLE_RULE``, which nothing else on the page uses) and counts the
lines of text between the two: a table that rendered no rows measures 0 whatever the DOM says.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from exporters.web.status_assets import TABLE_MARK, TABLE_RULE

WINDOW = (1400, 900)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


class ChromiumUnavailable(Exception):
    """No headless Chromium can run here; the message says why (the skip reason)."""


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ChromiumUnavailable("no chromium binary on PATH (Debian: apt-get install chromium)")


def chromium(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """One headless Chromium run on ``url`` (``--dump-dom`` or ``--screenshot=FILE``); it exits when done."""
    command = [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--force-device-scale-factor=1",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, url]
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ChromiumUnavailable(f"{' '.join(command)}: no answer within {timeout}s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise ChromiumUnavailable(f"{' '.join(command)} exited {proc.returncode}:\n" + "\n".join(err))
    return proc


def dump_dom(url: str) -> str:
    """The DOM after the page loaded and its scripts ran, serialized."""
    return chromium(url, "--dump-dom").stdout.decode()


def capture(url: str, path: Path) -> str:
    """One load of ``url``: its DOM after load (returned) and a PNG screenshot of the window at ``path``, both of
    the same page, so the two can be compared even while the containers on the host come and go."""
    path.unlink(missing_ok=True)
    dom = chromium(url, "--dump-dom", f"--screenshot={path}").stdout.decode()
    if not path.is_file():
        raise ChromiumUnavailable(f"chromium --screenshot={path} exited 0 but wrote no file")
    return dom


def check_chromium(tmp: Path) -> None:
    """Raise ``ChromiumUnavailable`` unless a headless Chromium renders a page here."""
    probe = tmp / "probe.html"
    probe.write_text("<!doctype html><title>probe</title><p id=x>chromium works</p>")
    if "chromium works" not in dump_dom(probe.as_uri()):
        raise ChromiumUnavailable("chromium --dump-dom did not render a local page")


# --- PNG ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    rows: list[bytes]  # unfiltered pixel rows

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        i = x * self.channels
        return tuple(self.rows[y][i:i + self.channels])


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        return bytes((x + b) & 0xFF for x, b in zip(line, prev, strict=True))
    out = bytearray(line)
    n = len(out)
    if kind == 1:
        for i in range(bpp, n):
            out[i] = (out[i] + out[i - bpp]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            upleft = prev[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + _paeth(left, prev[i], upleft)) & 0xFF
    else:
        raise ValueError(f"PNG filter type {kind} does not exist")
    return bytes(out)


def read_png(data: bytes) -> Image:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _compression, _filter, interlace = header
    channels = {2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color}, interlace {interlace}")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        prev = _unfilter(raw[start], raw[start + 1:start + 1 + stride], prev, channels)
        rows.append(prev)
    return Image(width, height, channels, rows)


# --- the measure --------------------------------------------------------------------------------------------

def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


MARK, RULE = _rgb(TABLE_MARK), _rgb(TABLE_RULE)
DARK = bytes(1 if v < 110 else 0 for v in range(256))  # text: dark grey to black (the page's text is #1d232b)


@dataclass(frozen=True)
class TableMeasure:
    found: bool  # a band in the table's header colour is on the screenshot
    top: int  # first pixel row below the header
    bottom: int  # first pixel row of the bottom rule (or the screenshot's end)
    ink_rows: int  # pixel rows in between with text on them
    lines: int  # runs of such rows: the lines of text, one per table row

    @property
    def empty(self) -> bool:
        return not self.found or self.lines == 0

    def __str__(self) -> str:
        if not self.found:
            return "no containers table on the screenshot"
        return (f"containers table from y={self.top} to y={self.bottom}: {self.lines} lines of text "
                f"({self.ink_rows} pixel rows with text)")


def _share(image: Image, row: bytes, colour: tuple[int, int, int]) -> float:
    pixel = bytes(colour) + (b"\xff" if image.channels == 4 else b"")
    return row.count(pixel) / image.width  # solid CSS colours are painted exactly


def measure_table(image: Image, share: float = 0.3) -> TableMeasure:
    """The containers table on a screenshot of the status page: the lines of text between its header (the first
    band of rows mostly in TABLE_MARK) and its bottom rule (the next row mostly in TABLE_RULE, or the screenshot's
    end when the table goes on below it)."""
    header = next((y for y, row in enumerate(image.rows) if _share(image, row, MARK) >= share), None)
    if header is None:
        return TableMeasure(False, 0, 0, 0, 0)
    top = header
    while top < image.height and _share(image, image.rows[top], MARK) >= share:
        top += 1
    bottom = top
    while bottom < image.height and _share(image, image.rows[bottom], RULE) < share:
        bottom += 1
    ink_rows = lines = 0
    previous = False
    for y in range(top, bottom):
        inked = image.rows[y][0::image.channels].translate(DARK).count(1) > 0  # the red channel is dark
        ink_rows += inked
        lines += inked and not previous
        previous = inked
    return TableMeasure(True, top, bottom, ink_rows, lines)
