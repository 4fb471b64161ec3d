"""The multiline benchmark's log (bench_routes.py ``--cases ml-plain,ml-java``): the route benchmark's lines with
20 % of them Java stack trace lines, as a Docker container of its own.

Every block of 50 lines is 39 of the benchmark's plain lines, an ERROR log line and a 10-line trace (the exception
line, 8 ``\\tat`` frames, ``... N more``): 10 of 50 lines (20 %) are trace lines, and ``multiline=java`` ships 40
records per block (39 plain lines and the ERROR line with its trace)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

CID_MULTILINE = "d" * 64
BLOCK = 50
TRACE = 10  # lines of a trace, after the ERROR line that reports it


def events(lines: int) -> int:
    """The records ``multiline=java`` ships for ``lines`` lines."""
    full, rest = divmod(lines, BLOCK)
    return full * (BLOCK - TRACE) + min(rest, BLOCK - TRACE)


def _trace(n: int) -> list[str]:
    return [f"java.lang.IllegalStateException: order {n} has no owner",
            *(f"\tat com.example.shop.cart.CartService.step{i}(CartService.java:{80 + i})" for i in range(8)),
            "\t... 42 more"]


def multiline_records(plain: Iterator[tuple[str, str, str]], lines: int) -> Iterator[tuple[str, str, str]]:
    """(stream, message, time) per line: the plain records with every block's last 11 lines an ERROR line and its
    trace (on the plain record's stream and time)."""
    for i, (stream, text, stamp) in enumerate(plain):
        if i >= lines:
            return
        k = i % BLOCK
        if k < BLOCK - TRACE - 1:
            yield stream, text, stamp
        elif k == BLOCK - TRACE - 1:
            yield "stderr", f"{text[:8]}ERROR CartController: checkout failed", stamp
        else:
            yield "stderr", _trace(i // BLOCK)[k - (BLOCK - TRACE)], stamp


def make_multiline(root: Path, lines: int, plain: Iterator[tuple[str, str, str]], config_v2: dict[str, object]) -> Path:
    """The Docker root of the multiline container (reused when it holds ``lines`` lines)."""
    droot = root / "docker-multiline"
    cdir = droot / "containers" / CID_MULTILINE
    log = cdir / f"{CID_MULTILINE}-json.log"
    marker = cdir / "lines"
    if log.exists() and marker.exists() and marker.read_text() == str(lines):
        return droot
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.v2.json").write_bytes(orjson.dumps({**config_v2, "ID": CID_MULTILINE}))
    (cdir / "hostconfig.json").write_bytes(b'{"NetworkMode":"default"}')
    with open(log, "wb") as fh:
        chunk = []
        for stream, text, stamp in multiline_records(plain, lines):
            chunk.append(orjson.dumps({"log": text + "\n", "stream": stream, "time": stamp}) + b"\n")
            if len(chunk) == 10_000:
                fh.write(b"".join(chunk))
                chunk = []
        fh.write(b"".join(chunk))
    marker.write_text(str(lines))
    return droot
