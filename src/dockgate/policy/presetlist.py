"""`dockgate policy presets [NAME]`: the shipped presets listed, or one shown whole with what
it allows (the same one-line summary `serve` prints at start)."""

from __future__ import annotations

from dockgate.policy.loader import parse_policy_text
from dockgate.policy.presetfiles import preset_names, read_preset
from dockgate.policy.summary import policy_summary


def list_presets() -> list[str]:
    """One line per preset: name, proven or not, the client it is for."""
    lines = []
    width = max((len(name) for name in preset_names()), default=0)
    for name in preset_names():
        preset = read_preset(name)
        assert preset is not None  # listed, hence there
        proof = "proven" if preset.proven else "from docs"
        lines.append(f"{name:<{width}}  {proof:<9}  {preset.summary}")
    lines.append("")
    lines.append(
        "Use one: policies: {NAME: {preset: NAME}}; show one: dockgate policy presets NAME"
    )
    return lines


def show_preset(name: str) -> list[str] | None:
    """The preset's file as shipped, then what it allows; None when there is no such preset."""
    preset = read_preset(name)
    if preset is None:
        return None
    policy = parse_policy_text(f"policies:\n  {name}: {{preset: {name}}}\n", preset.source)
    return [
        f"# {preset.source}",
        *preset.text.rstrip("\n").splitlines(),
        "",
        f"# allows: {policy_summary(policy.policies[name])}",
    ]
