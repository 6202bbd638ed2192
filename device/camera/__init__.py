"""Frame sources and tracking."""
