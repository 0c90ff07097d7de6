"""The presets shipped with dockgate: policy bodies for well-known clients, one YAML file each
under dockgate/policy/presets/ (package data), named by the file's stem.

This module only finds and reads them; policy/loader.py parses and merges them (`preset:` and
`extends:` in a policy file). Each file starts with a comment header: the client, the versions
and API calls it was written for, and whether a test here proves it with the real client
(`Proven:`) or it was written from the client's documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
PROVEN_MARK = "# Proven:"  # the header line of a preset a test here runs with the real client


@dataclass(frozen=True, slots=True)
class PresetFile:
    name: str
    source: str  # how errors and listings name it: `preset traefik (.../presets/traefik.yaml)`
    text: str

    @property
    def header(self) -> list[str]:
        """The leading comment lines, without their `# `."""
        lines = []
        for line in self.text.splitlines():
            if not line.startswith("#"):
                break
            lines.append(line[1:].removeprefix(" "))
        return lines

    @property
    def summary(self) -> str:
        """The header's first line: what client the preset is for."""
        header = self.header
        return header[0] if header else ""

    @property
    def proven(self) -> bool:
        return any(line.startswith(PROVEN_MARK) for line in self.text.splitlines())


def _directory() -> Traversable:
    return resources.files("dockgate.policy").joinpath("presets")


def preset_names() -> list[str]:
    """Every shipped preset, sorted."""
    names = [
        entry.name.removesuffix(".yaml")
        for entry in _directory().iterdir()
        if entry.name.endswith(".yaml")
    ]
    return sorted(name for name in names if _NAME.fullmatch(name))


def read_preset(name: str) -> PresetFile | None:
    """The preset called `name`, or None when there is none (never a path: names are checked,
    so `extends: ../x` cannot read another file)."""
    if not _NAME.fullmatch(name):
        return None
    entry = _directory().joinpath(f"{name}.yaml")
    if not entry.is_file():
        return None
    return PresetFile(name, f"preset {name} ({entry})", entry.read_text(encoding="utf-8"))
