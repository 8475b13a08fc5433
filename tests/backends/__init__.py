"""One module per store under test: its setup, ``KINDS``, and the fixtures of its server."""
