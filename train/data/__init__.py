"""Dataset import, cleaning, splitting and synthesis."""
