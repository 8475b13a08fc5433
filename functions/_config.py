"""The configuration the edges read from ``HERON_*``, once, and hand to the engine.

The engine reads no environment: a ``Runtime`` takes its store and its dispatcher as arguments.
The Lambda handlers, ``heron dev`` and the CLI read the environment here and configure the app's
runtime with it:

``HERON_STORE``            the store URL, for a runtime that did not pin its own store
``HERON_QUEUE_URL``        the resume queue: the runtime dispatches through SQS
``HERON_SQS_ENDPOINT_URL`` another SQS endpoint (a local one; ``AWS_ENDPOINT_URL_SQS`` too)
``HERON_APP``              ``module:attribute`` of the app's runtime (see ``_app.py``)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from heron.runtime import HeronError, InProcessDispatcher, Runtime
from heron.stores._url import masked

__all__ = ["Config", "StorePinned", "configure"]

log = logging.getLogger("heron")


class StorePinned(HeronError, ValueError):
    """A store URL was given, but the app's runtime pins a store of its own."""


@dataclass(frozen=True, slots=True)
class Config:
    """What ``HERON_*`` says (``None``: not set)."""

    store: str | None = None
    queue_url: str | None = None
    sqs_endpoint: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        return cls(
            store=env.get("HERON_STORE") or None,
            queue_url=env.get("HERON_QUEUE_URL") or None,
            sqs_endpoint=env.get("HERON_SQS_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT_URL_SQS")
            or None,
        )


def configure(rt: Runtime, config: Config, *, strict: bool = False) -> Runtime:
    """Give ``rt`` the store and dispatcher ``config`` names; returns ``rt``.

    A runtime that pinned its own store keeps it: a ``config.store`` naming that same store
    (``sqlite:///shop.db`` for an app that opened it) is fine; with ``strict`` (the CLI:
    ``--store`` must never be silently ignored) a different one raises :class:`StorePinned`;
    otherwise it is logged. The queue replaces the runtime's default in-process dispatcher only
    (one the app chose stays). Raises ``ValueError`` / ``MissingExtra`` for a bad store URL.
    """
    if config.store is not None:
        if not rt.store_pinned:
            from heron.stores import open_store

            rt.store = open_store(config.store)
        elif not _opens_same_store(config.store, rt.store):
            message = (
                f"the app's runtime pins its own store ({rt.store!r}), so the store URL "
                f"{masked(config.store)} is not used: drop it, or drop the store from the app"
            )
            if strict:
                raise StorePinned(message)
            log.warning(message)
    if config.queue_url and isinstance(rt.dispatcher, InProcessDispatcher):
        from heron.functions._sqs import SQSDispatcher

        rt.dispatcher = SQSDispatcher(config.queue_url, endpoint_url=config.sqs_endpoint)
    return rt


def _opens_same_store(url: str, store: object) -> bool:
    """Whether ``url`` opens the same store as ``store`` (stores are made lazily: opening one
    to compare connects to nothing). Two memory stores are never the same."""
    from heron.stores import open_store

    try:
        return repr(open_store(url)) == repr(store)
    except Exception:  # a bad URL or a missing extra: not that store, and said so
        return False
