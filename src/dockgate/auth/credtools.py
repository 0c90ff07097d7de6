"""`dockgate htpasswd add/remove/list` and `dockgate token create/list/revoke`: the credential
files of `serve --htpasswd` and `serve --tokens`, edited without Apache's tools or a text editor.

A running gateway watches both files and reads them again within a second of a change (see
watched.py), so a user added or a token revoked here takes effect without a restart. Every
edit is atomic and keeps the file's mode and owner (auth/credfile.py); missing directories are
created mode 0700 and a new file is mode 0600.

Exit status: 0 done; 1 not found (the user, the token or the file); 2 a usage, format or I/O
error. Errors are one line on stderr, `dockgate: error: ...`, naming the path and the fix.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from dockgate.auth.credfile import (
    CredentialFileError,
    MissingFile,
    Written,
    edit_file,
    read_existing,
)
from dockgate.auth.filemode import mode_warning
from dockgate.auth.htpasswd import HtpasswdError, load_htpasswd, parse_htpasswd
from dockgate.auth.htpasswd_edit import (
    MAX_BCRYPT_COST,
    MIN_BCRYPT_COST,
    NEW_ENTRY_COST,
    HtpasswdEditError,
    check_cost,
    check_password,
    check_user_name,
    describe_users,
    hash_password,
    mixed_costs,
    remove_user,
    set_user,
)
from dockgate.auth.tokens import (
    TokenFileError,
    create_token_line,
    line_identity,
    line_name,
    parse_tokens,
)

COMMANDS = ("htpasswd", "token")
OK, NOT_FOUND, FAILED = 0, 1, 2
# `serve` reads these variables for --htpasswd and --tokens: the tools default to the same file.
HTPASSWD_VARIABLE = "DOCKGATE_HTPASSWD"
TOKENS_VARIABLE = "DOCKGATE_TOKENS"


class NotFound(Exception):
    """The user or token to remove is not in the file (exit 1)."""


class UsageError(Exception):
    """Options that do not go together, or a password that could not be read (exit 2)."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `htpasswd` and `token` subcommands, on the top-level parser's subparsers."""
    htpasswd = commands.add_parser("htpasswd", help="users of an htpasswd file (bcrypt)")
    users = htpasswd.add_subparsers(dest="htpasswd_command", required=True)
    add = users.add_parser(
        "add", help="add USER, or change USER's password (asked twice, or --password-stdin)"
    )
    add.add_argument("user", metavar="USER")
    _file_option(add, HTPASSWD_VARIABLE)
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (one line) instead of asking on the terminal",
    )
    add.add_argument(
        "--cost",
        type=int,
        default=NEW_ENTRY_COST,
        metavar="N",
        help=f"bcrypt cost, {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST} (default %(default)s)",
    )
    remove = users.add_parser("remove", help="remove USER (exit 1 if there is none)")
    remove.add_argument("user", metavar="USER")
    _file_option(remove, HTPASSWD_VARIABLE)
    listing = users.add_parser("list", help="the users and their hash kind (never the hashes)")
    _file_option(listing, HTPASSWD_VARIABLE)

    token = commands.add_parser("token", help="bearer tokens")
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = tokens.add_parser(
        "create", help="create a token, add its hash to FILE, print the token once"
    )
    _file_option(create, TOKENS_VARIABLE)
    create.add_argument("--name", required=True, help="a name for this token (unique)")
    create.add_argument("--identity", required=True, help="the identity policies bind to")
    listing = tokens.add_parser(
        "list", help="names, identities and creation times (never tokens or hashes)"
    )
    _file_option(listing, TOKENS_VARIABLE)
    revoke = tokens.add_parser(
        "revoke", help="remove the token NAME, or every token of --identity (exit 1 if none)"
    )
    revoke.add_argument("name", metavar="NAME", nargs="?", help="the token's name")
    revoke.add_argument("--identity", default=None, help="revoke all tokens of this identity")
    _file_option(revoke, TOKENS_VARIABLE)


def _file_option(parser: argparse.ArgumentParser, variable: str) -> None:
    parser.add_argument(
        "--file",
        default=None,
        metavar="FILE",
        help=f"the file (default ${variable}, what `serve` reads; missing directories are "
        "created mode 700, a new file mode 600)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the parsed `htpasswd` or `token` command; the exit status."""
    try:
        if args.command == "htpasswd":
            path = _path(args.file, HTPASSWD_VARIABLE)
            if args.htpasswd_command == "add":
                return _htpasswd_add(path, args.user, args.cost, args.password_stdin)
            if args.htpasswd_command == "remove":
                return _htpasswd_remove(path, args.user)
            return _htpasswd_list(path)
        path = _path(args.file, TOKENS_VARIABLE)
        if args.token_command == "create":
            return _token_create(path, args.name, args.identity)
        if args.token_command == "list":
            return _token_list(path)
        return _token_revoke(path, args.name, args.identity)
    except (NotFound, MissingFile) as exc:
        _error(str(exc))
        return NOT_FOUND
    except (
        UsageError,
        CredentialFileError,
        HtpasswdEditError,
        HtpasswdError,
        TokenFileError,
    ) as exc:
        _error(str(exc))
        return FAILED


def _path(given: str | None, variable: str) -> Path:
    text = given or os.environ.get(variable)
    if not text:
        raise UsageError(f"which file? give --file FILE (or set {variable})")
    return Path(text)


def _error(message: str) -> None:
    print(f"dockgate: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"dockgate: {message}", file=sys.stderr)


def _report(written: Written, kind: str) -> None:
    for directory in written.created_directories:
        _note(f"created the directory {directory} (mode 700)")
    if written.created:
        _note(f"created {written.path} (mode 600)")
    for warning in written.warnings:
        _note(f"warning: {warning}")
    # The edit kept the old file's mode (credfile.py): say so when it lets others read the
    # hashes or write the file; `serve` and `doctor` say the same (auth/filemode.py).
    mode = mode_warning(written.path, kind)
    if mode is not None:
        _note(f"warning: {mode}")


# ----- htpasswd ---------------------------------------------------------------------------------


def _htpasswd_add(path: Path, user: str, cost: int, from_stdin: bool) -> int:
    check_user_name(user)  # before asking for a password that could not be used
    check_cost(cost)
    password = _password_from_stdin() if from_stdin else _password_from_terminal(user)
    hashed = hash_password(password, cost)  # slow by design: outside the file's lock
    replaced = False

    def edit(text: str | None) -> str:
        nonlocal replaced
        edited = set_user(text, user, hashed, str(path))
        replaced = edited.changed
        return edited.text

    written = edit_file(path, edit)
    _report(written, "htpasswd")
    what = "password changed in" if replaced else "added to"
    _note(f"user {user!r} {what} {path} (a running gateway reads it within a second)")
    warning = mixed_costs(load_htpasswd(path))
    if warning is not None:
        _note(f"warning: {warning}")
    return OK


def _password_from_stdin() -> str:
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the password on stdin is not UTF-8") from None
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    if "\n" in text or "\r" in text:
        raise UsageError("give one password, on one line, on stdin")
    check_password(text)
    return text


def _password_from_terminal(user: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password on: pipe it with --password-stdin")
    try:
        first = getpass.getpass(f"New password for {user}: ")
        check_password(first)
        second = getpass.getpass("Again: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        raise UsageError("no password given; nothing written") from None
    if first != second:
        raise UsageError("the two passwords differ; nothing written")
    return first


def _htpasswd_remove(path: Path, user: str) -> int:
    def edit(text: str | None) -> str:
        edited = remove_user(text, user, str(path))
        if not edited.changed:
            raise NotFound(f"{path}: no user {user!r}")
        return edited.text

    _report(edit_file(path, edit, create=False), "htpasswd")
    _note(f"user {user!r} removed from {path} (a running gateway reads it within a second)")
    return OK


def _existing_text(path: Path) -> str:
    """The file's text for `list` (a missing file is exit 1; a FIFO is refused, not read)."""
    text = read_existing(path)
    if text is None:
        raise NotFound(f"{path}: no such file")
    return text


def _htpasswd_list(path: Path) -> int:
    htpasswd = parse_htpasswd(_existing_text(path), str(path))
    for warning in htpasswd.warnings:
        _note(f"warning: {warning}")
    rows = describe_users(htpasswd)
    width = max((len(user) for user, _ in rows), default=0)
    for user, kind in rows:
        print(f"{user:<{width}}  {kind}")
    return OK


# ----- tokens -----------------------------------------------------------------------------------


def _token_create(path: Path, name: str, identity: str) -> int:
    token, line = create_token_line(name, identity)

    def edit(text: str | None) -> str:
        old = text or ""
        if any(line_name(existing) == name for existing in old.splitlines()):
            raise UsageError(
                f"{path}: a token named {name!r} exists: revoke it first "
                f"(dockgate token revoke {name}) or choose another name"
            )
        if old and not old.endswith(("\n", "\r")):
            old += "\n"
        return _tokens_loadable(old + line + "\n", path)

    written = edit_file(path, edit)
    _report(written, "tokens")
    print(token)
    _note(
        f"token {name!r} for identity {identity!r} added to {path}; "
        "this is the only time it is shown"
    )
    return OK


def _token_list(path: Path) -> int:
    entries = list(parse_tokens(_existing_text(path), str(path)).by_digest.values())
    rows = [("NAME", "IDENTITY", "CREATED")]
    rows += [(e.name, e.identity, e.created or "-") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, identity, created in rows:
        print(f"{name:<{widths[0]}}  {identity:<{widths[1]}}  {created}")
    return OK


def _token_revoke(path: Path, name: str | None, identity: str | None) -> int:
    if (name is None) == (identity is None):
        raise UsageError("give a token NAME or --identity IDENTITY (one of the two)")
    revoked: list[str] = []

    def edit(text: str | None) -> str:
        kept = []
        for line in (text or "").splitlines(keepends=True):
            # Lines found as parse_tokens finds them (comments and blank lines are None).
            if (name is not None and line_name(line) == name) or (
                identity is not None and line_identity(line) == identity
            ):
                revoked.append(line_name(line) or "")
            else:
                kept.append(line)
        if not revoked:
            which = f"token {name!r}" if name is not None else f"token of identity {identity!r}"
            raise NotFound(f"{path}: no {which}")
        return _tokens_loadable("".join(kept), path)

    _report(edit_file(path, edit, create=False), "tokens")
    names = ", ".join(repr(n) for n in revoked)
    _note(f"revoked {names} in {path} (a running gateway refuses it within a second)")
    return OK


def _tokens_loadable(text: str, path: Path) -> str:
    try:
        parse_tokens(text, str(path))
    except TokenFileError as exc:
        raise TokenFileError(
            f"{exc} (the gateway would not load the file: fix that line first)"
        ) from None
    return text
