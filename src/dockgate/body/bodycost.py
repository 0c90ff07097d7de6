"""A bound on the work one checked body may cost the gateway.

Checked bodies are parsed and judged on the event loop, at roughly a microsecond or two of
Python per JSON value (the reader's per-entry work: a mount, a bind, a label). A megabyte of
small mounts was ~0.2 s of CPU: one caller sending such bodies from a few connections stalled
every other caller's requests (issue 11, second attack review). So the number of values a
checked body may hold is bounded before it is parsed, far above what clients send (a
`docker run` create body has under 200, compose's a few hundred): one body then costs a few
milliseconds at most.

The count is what `bytes.count` gives at C speed without parsing: the separators `:` and `,`.
Every object member needs a `:`, and every list entry but a list's first a `,`; a first entry
is itself in a list that was counted, or nested as the first of the first (depth is bounded by
the parser: deeper is a 400), so keys and list entries are at most twice the count plus the
depth. It also counts those characters inside strings (a long command line, a URL), which is
why the bound is generous. (`[` is not counted: `[[[...]]]` 100,000 deep stays a malformed
body, 400.)
"""

from __future__ import annotations

# The separators (`:` and `,`) a checked body may hold; see the module docstring.
MAX_SEPARATORS = 10_000


def separators(body: bytes) -> int:
    """The `:` and `,` characters of `body` (strings included)."""
    return body.count(b":") + body.count(b",")


def cost_problem(body: bytes) -> str | None:
    """Why `body` is refused as too costly to check (413), or None."""
    if len(body) < MAX_SEPARATORS:
        return None  # cannot hold that many separators
    found = separators(body)
    if found <= MAX_SEPARATORS:
        return None
    return (
        f"the body holds {found} JSON separators (':' and ','); at most {MAX_SEPARATORS} "
        "are checked (keys and list entries)"
    )
