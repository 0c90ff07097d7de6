"""dockgate: a safe, fast gateway for the Docker Engine API over the network."""

__version__ = "0.1.0"
