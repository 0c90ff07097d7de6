"""Which `ps_args` of `GET /containers/{id}/top` cannot print a process's environment.

The daemon runs the host's `ps` with the caller's arguments (moby v20.10.24
daemon/top_unix.go: `strings.Split(psArgs, " ")`, then `ps ARGS -qPIDS`, and `ps ARGS` again if
that fails) and returns its columns. procps' BSD-style `e` flag appends each process's
environment to its command: `ps_args=auxe` shows the very values that `redact: {env: true}`
hides in ContainerInspect. The letter is not safe behind a dash either: procps reads a command
line that fails to parse in UNIX syntax a second time as BSD syntax with the dashes dropped, so
`-ex` (x is not a UNIX option) and `-eHT` (H and T conflict) both print environments (checked
against procps-ng 4.0.2, the `ps` of the test host, by tests/body/test_top_args.py).

So the arguments are judged by an allowlist: flag groups made of letters that print no
environment in either syntax, `-o`/`o` formats of known column names, and the letter `e` only
in the forms whose UNIX parse cannot fail (`-e` with a few format letters, `-ef`, `-eo pid,comm`).
`-A` selects every process as `-e` does, and is always accepted.
"""

from __future__ import annotations

import re

# UNIX-syntax letters (after a dash) that take no argument and print no environment, in either
# syntax: A all, a/d selections, f/F full, l long, y, j jobs, L/m/T threads, H hierarchy,
# c scheduling class, w wide. Not `e` (see above), nor letters that take an argument.
_UNIX_LETTERS = frozenset("AadfFlyjLmTHcw")
# BSD-syntax letters (no dash): a/x/r/T selections, u/j/l/s/v/X formats, f forest, c true
# command name, n numeric, w wide, m/H threads, S cumulative. Never `e`.
_BSD_LETTERS = frozenset("axrTujlsvXfcnwmHS")
# The one group with `e` accepted: `-e` and letters that, with it, always parse in UNIX syntax
# (every combination of up to three of them, with and without a format, was run against
# procps-ng: none printed an environment). `w` may repeat (`-efww`).
_E_GROUP = re.compile(r"-e(?:[fFlyjLAa]{0,3})w*")
# Columns of `-o`/`o`/`-O`/`O` formats (procps `ps L`); none of them is the environment.
_COLUMNS = frozenset(
    {
        "pid", "ppid", "pgid", "pgrp", "sid", "sess", "tid", "lwp", "spid", "nlwp", "thcount",
        "user", "euser", "ruser", "suser", "fuser", "uid", "euid", "ruid", "suid", "fuid",
        "uname", "group", "egroup", "rgroup", "gid", "egid", "rgid",
        "comm", "ucomm", "ucmd", "fname", "args", "cmd", "command",
        "etime", "etimes", "time", "cputime", "times", "stime", "start", "start_time",
        "lstart", "bsdstart", "bsdtime", "pcpu", "%cpu", "c", "cp", "pmem", "%mem",
        "rss", "rssize", "rsz", "vsz", "vsize", "sz", "size", "drs", "trs", "maj_flt",
        "min_flt", "stat", "state", "s", "tty", "tt", "tname", "ni", "nice", "pri",
        "priority", "psr", "cls", "class", "policy", "rtprio", "wchan", "nwchan", "f",
        "flags", "flag", "label", "tpgid", "sgi_p",
    }
)  # fmt: skip
# `col=Header` renames a column; the header is plain text.
_COLUMN = re.compile(r"([a-z_%]+)(?:=[A-Za-z0-9_%-]*)?")


def top_args_problem(ps_args: str) -> str | None:
    """Why `ps_args` might print environments (None when it cannot). An empty value is the
    daemon's default, `-ef`."""
    if not ps_args:
        return None
    tokens = ps_args.split(" ")  # as the daemon splits them: two spaces make an empty argument
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token in ("-o", "o", "-O", "O"):
            if index == len(tokens) or not _format_ok(tokens[index]):
                return f"ps_args format {' '.join(tokens[index - 1 : index + 1])!r} is not known"
            index += 1
            continue
        wants_format = len(token) > 1 and token[-1] in "oO"
        group = token[:-1] if wants_format else token
        if not _group_ok(group, tokens):
            return f"ps_args {token!r} is not known to leave environments out"
        if wants_format:
            if index == len(tokens) or not _format_ok(tokens[index]):
                return f"ps_args {token!r} needs a format of known columns"
            index += 1
    return None


def _group_ok(group: str, tokens: list[str]) -> bool:
    if group.startswith("-"):
        letters = group[1:]
        if letters and set(letters) <= _UNIX_LETTERS:
            return True
        # `-e...` only as the first group, with nothing but a format after it: anything else
        # beside it could make the UNIX parse fail and `e` become the environment flag.
        if _E_GROUP.fullmatch(group) is None:
            return False
        if tokens[0] == group + "o":
            return len(tokens) == 2  # `-eo FORMAT`
        rest = tokens[1:]
        return tokens[0] == group and (not rest or (len(rest) == 2 and rest[0] == "-o"))
    return bool(group) and set(group) <= _BSD_LETTERS


def _format_ok(text: str) -> bool:
    for column in text.split(","):
        match = _COLUMN.fullmatch(column)
        if match is None or match.group(1) not in _COLUMNS:
            return False
    return True
