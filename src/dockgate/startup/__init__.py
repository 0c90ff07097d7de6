"""What happens once, before serving: start-up checks, `dockgate doctor`, the container drop-in
rule, systemd socket activation and readiness."""
