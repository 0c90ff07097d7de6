"""Request bodies read as the daemon reads them, and the guardrails policies put on them."""
