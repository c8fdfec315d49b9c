"""Stage 3, fetch: the preflight that refuses a plan this machine cannot run, then the model from the
Hugging Face Hub, a tarball or a local directory, into a cache shared by later builds."""
