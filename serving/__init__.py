"""The chat server: an OpenAI-compatible API over the opsassist pipeline (``serving.app:app``)."""
