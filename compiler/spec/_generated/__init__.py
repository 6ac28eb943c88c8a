"""Generated code (`python -m cgsc.regenerate` writes it; a test fails while it is stale)."""
