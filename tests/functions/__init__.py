"""Tests of the ways into Heron: the CLI, the HTTP API, the Lambda handlers."""
