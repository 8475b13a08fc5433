"""Every way into Heron: Lambda handlers, the HTTP API, the local emulator and the CLI.

``SQSDispatcher`` (the resume queue's dispatcher) is imported on first use, so a handler that
does not dispatch to SQS never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["SQSDispatcher"]

if TYPE_CHECKING:
    from heron.functions._sqs import SQSDispatcher


def __getattr__(name: str) -> Any:
    if name == "SQSDispatcher":
        from heron.functions._sqs import SQSDispatcher

        return SQSDispatcher
    raise AttributeError(f"module 'heron.functions' has no attribute {name!r}")
