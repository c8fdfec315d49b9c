"""Stage 6, outputs: what makes an engine servable and delivered: Triton model repositories verified
the way Triton loads them, the smoke test, the S3 upload, and ``inspect`` of any archive."""
