"""Every way into Heron: Lambda handlers, the HTTP API, the local emulator and the CLI."""
