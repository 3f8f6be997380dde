"""Sources: one module per kind, each with one small interface."""
