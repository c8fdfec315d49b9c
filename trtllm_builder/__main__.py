"""``python -m trtllm_builder``."""

from __future__ import annotations

from trtllm_builder.cli import main

raise SystemExit(main())
