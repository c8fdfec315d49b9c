"""Stage 4, run: each step under a supervisor that owns its process tree, its output streamed, bounded
and logged, its result kept in (and resumed from) the step cache, inside a work dir the tool owns."""
