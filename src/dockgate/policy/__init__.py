"""Access policy: which Engine API operations a caller may use, decided by declarative rules."""
