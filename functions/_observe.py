"""Powertools for the Lambda handlers: one ``Logger``, one ``Metrics`` and the runtime observer.

Every line is one JSON object on stdout. Lines about a run carry ``run_id`` and ``workflow``,
lines about a step ``seq`` and ``step``; the API's lines carry the request id as
``correlation_id``; the engine's own ``heron`` logger writes through the same handler, so its
``extra`` keys appear too. Payloads (inputs, outputs, signal payloads) and headers are never
logged.

Metrics (namespace ``POWERTOOLS_METRICS_NAMESPACE``, default ``Heron``; CloudWatch EMF, one
flush per invocation): ``RunsStarted``, ``RunsCompleted``, ``RunsFailed``, ``StepsCompleted``,
``StepsFailed``, ``RunsDispatched`` (sweep), ``Resumes`` (resume) and ``WakeLateness`` (seconds
between a timer's deadline and the moment its run woke up).

Only the handlers import this module (it imports Powertools); the CLI and ``heron dev`` do not.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import Metrics, MetricUnit

from heron.runtime import Runtime
from heron.stores.contract import Checkpoint, Run

__all__ = ["ENGINE_LOGGER", "instrument", "log_context", "logger", "metrics", "publish_metrics"]

F = TypeVar("F", bound=Callable[..., Any])

#: The stdlib logger the engine writes to (``runtime`` logs with ``extra={"run_id": ...}``).
ENGINE_LOGGER = "heron"
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "heron"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Heron"


class _Stdout(io.TextIOBase):
    """Writes to whatever ``sys.stdout`` is at the time (Lambda's, or a test's capture)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(_Stdout()))
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
if logger.name != ENGINE_LOGGER:  # a service named "heron" already is the engine's logger
    copy_config_to_registered_loggers(source_logger=logger, include={ENGINE_LOGGER})


def log_context(**keys: Any) -> None:
    """Add keys to every line logged from here on in this task (a ``contextvars`` copy each)."""
    logger.thread_safe_append_keys(**keys)


def publish_metrics(handler: F) -> F:
    """Flush the EMF metrics once per invocation, also when the handler raises.

    What Powertools' ``log_metrics`` does, without its warning for an invocation that recorded
    no metric (a GET, a sweep with nothing due).
    """

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            if metrics.metric_set:
                metrics.flush_metrics()
            else:
                metrics.clear_metrics()

    return wrapper  # type: ignore[return-value]


_instrumented: weakref.WeakSet[Runtime] = weakref.WeakSet()


def instrument(rt: Runtime) -> Runtime:
    """Feed ``rt``'s progress to the logger and the metrics (once per runtime)."""
    if rt not in _instrumented:
        rt.observe(_observer)
        _instrumented.add(rt)
    return rt


def _count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


def _observer(event: str, data: Mapping[str, Any]) -> None:
    run: Run = data["run"]
    if event == "run.resumed":
        log_context(run_id=run.id, workflow=run.workflow)
    elif event == "checkpoint":
        _checkpoint(run, data["checkpoint"])
    elif event == "run.started":  # the engine logs it
        _count("RunsStarted")
    elif event == "run.finished":
        if run.status == "completed":
            _count("RunsCompleted")
        elif run.status == "failed":
            _count("RunsFailed")
            error = (run.error or {}).get("type")
            logger.warning(
                "run failed",
                extra={"run_id": run.id, "workflow": run.workflow, "error_type": error},
            )


def _checkpoint(run: Run, cp: Checkpoint) -> None:
    where = {"run_id": run.id, "workflow": run.workflow, "seq": cp.seq, "step": cp.name}
    if cp.kind == "step":
        if cp.error is None:
            _count("StepsCompleted")
            logger.debug("step completed", extra={**where, "attempts": cp.attempts})
        else:
            _count("StepsFailed")
            error = cp.error.get("type")
            logger.warning(
                "step failed", extra={**where, "attempts": cp.attempts, "error_type": error}
            )
    elif cp.kind == "sleep" and isinstance(cp.value, int | float):
        lateness = max(0.0, cp.at - float(cp.value))
        _count("WakeLateness", lateness, MetricUnit.Seconds)
        logger.info("timer fired", extra={**where, "lateness": round(lateness, 3)})
