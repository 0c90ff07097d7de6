"""Text that someone else chose, made safe to print in one line of a log.

A client certificate's subject and names are the holder's text (a CA signs what it is asked to,
often without looking at the CN), and so is the identity that comes from them: a line break in
either, printed as is, writes a line of the holder's choosing into the gateway's log (issue 12,
attack review: the several-names refusal; the text access log's `user=`). JSON lines need nothing
from here (`json.dumps` escapes control characters); plain-text lines pass such text through
`printable` first.
"""

from __future__ import annotations


def _escaped(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, spaces: bool = False) -> str:
    """`text` with what `str.isprintable` rejects (control characters, line and paragraph
    separators, bidirectional overrides and other format characters, spaces other than ASCII's)
    and the backslash written as Python escapes, so that the line stays one line and reads back
    unambiguously. `spaces`: the ASCII space too, for a value in a space-separated field
    (`user=Alice\\x20Smith`)."""
    if text.isprintable() and "\\" not in text and not (spaces and " " in text):
        return text  # the common case: nothing to do, and no per-character work
    return "".join(
        char
        if char.isprintable() and char != "\\" and not (spaces and char == " ")
        else _escaped(char)
        for char in text
    )
