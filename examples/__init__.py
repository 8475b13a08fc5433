"""Runnable example workflows, used by the demo, the docs and the tests."""
