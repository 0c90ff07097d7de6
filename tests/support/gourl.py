"""Go's ``net/url`` path unescaping, transcribed: how dockerd decodes the paths it routes on."""

from __future__ import annotations

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def go_unescape_path(raw_path: str) -> bytes | None:
    """Go's ``unescape(s, encodePath)``: the decoded bytes, or None where Go returns an
    EscapeError (a ``%`` not followed by two hex digits)."""
    data = raw_path.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == ord("%"):
            if (
                i + 2 >= len(data)
                or data[i + 1] not in _HEX_DIGITS
                or data[i + 2] not in _HEX_DIGITS
            ):
                return None
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)
