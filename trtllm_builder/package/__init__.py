"""Stage 5, package: the archive written in one pass with its checksummed manifest, and read back
exactly as ``tar -xzf`` reads it."""
