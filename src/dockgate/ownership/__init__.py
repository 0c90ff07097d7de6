"""Ownership mode: each caller sees and touches only the objects it created through dockgate
(owner labels, look-ups on the daemon, pinned references, answers scrubbed)."""
