"""Parsers: Markdown runbooks, log lines, metrics and events into normalised records."""
