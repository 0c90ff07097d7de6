"""Identities: who is calling (htpasswd users, tokens, TLS client certificates)."""
