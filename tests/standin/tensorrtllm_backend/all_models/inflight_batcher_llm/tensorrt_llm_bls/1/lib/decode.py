"""Placeholder for the backend's BLS helper library (stand-in, tests only)."""
