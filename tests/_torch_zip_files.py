"""Test helper: damage a torch zip file the way a failing disk or a bad copy does."""

from __future__ import annotations

import zipfile
from pathlib import Path


def flip_bit_in_largest_entry(path: Path) -> str:
    """Flip one bit in the middle of the stored bytes of ``path``'s largest zip entry (a tensor); its name."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + o : info.header_offset + o + 2], "little")
                           for o in (26, 28))  # fmt: skip
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0x04
    path.write_bytes(bytes(raw))
    return info.filename
