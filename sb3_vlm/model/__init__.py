"""The model layer: VLM backbone, DPT and history heads, the SB3 features extractor, its feature cache, and the one
configuration dataclass (:class:`VLMConfig`) they are built from. Nothing here knows about TD3, files or serving."""
