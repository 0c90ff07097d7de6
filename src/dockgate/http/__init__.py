"""HTTP/1.1 framing with no I/O: bytes in, events out (the sans-IO style of h11)."""
