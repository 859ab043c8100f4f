"""Monitor tests against the embedded broker."""
