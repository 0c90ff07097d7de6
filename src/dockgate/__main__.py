"""`python -m dockgate` runs the command-line interface."""

from dockgate.cli import main

raise SystemExit(main())
