"""Front ends (placeholder docstring)."""
