"""Stage 1, config: the YAML read (file, URL, upload) and validated into one normalised form, both the
project's and cog-trt-llm's; nothing here runs or downloads anything but the config text itself."""
