"""Example applications for preforkd (run them from the repository root)."""
