"""Log files as blocks of whole lines: the one place that reads .gz, drops over-long lines and counts
unreadable files. The reader splits the blocks into lines."""
from __future__ import annotations

import gzip
import os
from typing import Iterator

READ_SIZE = 1 << 20
MAX_LINE = 16 << 20        # a "line" longer than this is garbage (skipped, counted) — keeps memory bounded


def whole_line_blocks(path: str, counts, read_size: int = READ_SIZE, start: int = 0,
                      end: int | None = None) -> Iterator[tuple[bytes, int]]:
    """``(block, end)`` pairs: ``block[:end]`` are whole lines of ``path`` (the last ends with a newline;
    a last line of the file without one gets one). What follows ``end`` comes again in the next block.
    Not sliced here: a slice of a 1 MiB read is a fresh 1 MiB allocation (page faults).

    ``start`` / ``end`` (not for ``.gz``) restrict the blocks to the lines that *start* in that byte range,
    so ranges cut anywhere cover every line exactly once (the parallel reader's spans).

    ``counts`` gets ``bytes_read += `` what was read, ``skipped += 1`` per over-long line and per file that
    could not be read to its end (a truncated .gz), and the path appended to ``files_missing`` if it is
    gone. Memory is bounded by ``read_size`` plus ``MAX_LINE``.
    """
    opener = gzip.open if path.endswith(".gz") else open
    tail = b""
    discarding = start > 0            # the line straddling `start` belongs to the previous range
    pos = start - 1 if start > 0 else 0   # file offset of the next read
    try:
        with opener(path, "rb") as f:
            if start > 0:
                f.seek(pos)
            read = f.read
            while True:
                b = read(read_size)
                if not b:
                    break
                counts.bytes_read += len(b)
                bpos = pos                # file offset of b[0]
                pos += len(b)
                if discarding:            # inside an over-long line (or the previous range's): drop up to its end
                    nl = b.find(b"\n")
                    if nl < 0:
                        continue
                    b = b[nl + 1:]
                    bpos += nl + 1
                    discarding = False
                if tail:
                    b = tail + b
                    bpos -= len(tail)
                if end is not None:
                    if bpos >= end:
                        return
                    cut = b.rfind(b"\n") + 1
                    if bpos + cut > end:  # the lines starting from `end` on are the next range's
                        yield b, b.find(b"\n", end - bpos - 1) + 1
                        return
                else:
                    cut = b.rfind(b"\n") + 1
                if cut:
                    tail = b[cut:]
                    yield b, cut
                else:
                    tail = b
                if len(tail) > MAX_LINE:  # no newline for 16 MiB: garbage, count it once
                    counts.skipped += 1
                    tail = b""
                    discarding = True
    except (OSError, EOFError) as e:      # unreadable file or truncated .gz: count, move on
        counts.skipped += 1
        if not isinstance(e, EOFError) and not os.path.exists(path):
            counts.files_missing.append(path)
    if tail and (end is None or pos - len(tail) < end):
        yield tail + b"\n", len(tail) + 1
