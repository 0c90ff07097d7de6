"""Every `serve` option as a DOCKGATE_ environment variable (for containers and Swarm
services), with the command line winning, checked on the configuration the CLI builds."""

from __future__ import annotations

import pytest

from dockgate import cli
from dockgate.addresses import parse_address


def _config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> object:
    monkeypatch.setattr(cli, "_ENV_LISTS", {})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = cli._build_parser().parse_args(["serve", *argv])
    for dest, values in cli._ENV_LISTS.items():
        if not getattr(args, dest):
            setattr(args, dest, values)
    return cli._serve_config(args)


def test_the_help_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "DOCKGATE_LISTEN" in out and "--admin-listen" in out


def test_variables_set_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(
        monkeypatch,
        {
            "DOCKGATE_LISTEN": "tcp://127.0.0.1:2375, unix:///run/dg.sock",
            "DOCKGATE_WORKERS": "3",
            "DOCKGATE_ACCESS_LOG": "off",
            "DOCKGATE_INSECURE": "true",
            "DOCKGATE_TRUSTED_PROXY": "10.0.0.0/8,192.0.2.1",
            "DOCKGATE_AUDIT_LOG": "-",
            "DOCKGATE_ADMIN_LISTEN": "tcp://127.0.0.1:9375",
        },
    )
    assert config.listen == [  # type: ignore[attr-defined]
        parse_address("tcp://127.0.0.1:2375"),
        parse_address("unix:///run/dg.sock"),
    ]
    assert config.workers == 3  # type: ignore[attr-defined]
    assert config.access_log == "off"  # type: ignore[attr-defined]
    assert config.insecure is True  # type: ignore[attr-defined]
    assert config.trusted_proxies.contains("10.1.2.3")  # type: ignore[attr-defined]
    assert config.audit_log == "-"  # type: ignore[attr-defined]
    assert config.admin_listen == parse_address("tcp://127.0.0.1:9375")  # type: ignore[attr-defined]


def test_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(
        monkeypatch,
        {"DOCKGATE_LISTEN": "tcp://127.0.0.1:1111", "DOCKGATE_WORKERS": "3"},
        "--listen",
        "tcp://127.0.0.1:2222",
        "--workers",
        "2",
    )
    assert config.listen == [parse_address("tcp://127.0.0.1:2222")]  # type: ignore[attr-defined]
    assert config.workers == 2  # type: ignore[attr-defined]


def test_a_bad_switch_value_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKGATE_INSECURE", "maybe")
    assert cli.main(["serve"]) == 2
    assert "DOCKGATE_INSECURE='maybe'" in capsys.readouterr().err
