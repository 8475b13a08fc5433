"""What a runtime knows of the code: its workflows (by name and version) and its steps.

A function passed to ``ctx.step`` without ``@rt.step`` is a step too, with the default policy;
its spec is cached by a weak reference, so a closure or a lambda made per run is forgotten with
it (a long-lived process running many runs does not grow).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from heron.runtime._errors import WorkflowNotFound
from heron.runtime._retry import DEFAULT_RETRY, RetryPolicy, check_seconds
from heron.runtime._serde import build_decoder, parameter_annotation, return_annotation

__all__ = ["Registry", "StepSpec", "WorkflowSpec"]


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step: its recorded ``name``, its ``retry`` policy, whether it is a coroutine function,
    how to rebuild its result (``decoder``, ``None``: as stored) and the per-attempt
    ``timeout`` in seconds (``None``: none)."""

    name: str
    retry: RetryPolicy
    is_async: bool
    decoder: Callable[[Any], Any] | None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    version: str
    fn: Callable[..., Awaitable[Any]]
    input_decoder: Callable[[Any], Any] | None
    decoder: Callable[[Any], Any] | None


class Registry:
    """Workflows by name and version, steps by function."""

    def __init__(self) -> None:
        self._workflows: dict[str, dict[str, WorkflowSpec]] = {}
        self._steps: dict[Callable[..., Any], StepSpec] = {}
        self._derived: weakref.WeakKeyDictionary[Callable[..., Any], StepSpec] = (
            weakref.WeakKeyDictionary()
        )

    # -- steps ----------------------------------------------------------------------------------

    def add_step(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> StepSpec:
        """Register ``fn``; raises ``TypeError`` for a return annotation that cannot be rebuilt
        from JSON and ``ValueError`` for a bad ``timeout``."""
        spec = self._make(fn, name, retry, timeout)
        self._steps[fn] = spec
        return spec

    def step(self, fn: Callable[..., Any]) -> StepSpec:
        """The spec of ``fn``: registered, or derived (the default policy) and weakly cached."""
        spec = self._steps.get(fn)
        if spec is not None:
            return spec
        try:
            return self._derived[fn]
        except (KeyError, TypeError):
            pass
        spec = self._make(fn, None, None, None)
        try:
            self._derived[fn] = spec
        except TypeError:  # not weakly referenceable (a builtin): rebuilt each time, never kept
            pass
        return spec

    @staticmethod
    def _make(
        fn: Callable[..., Any], name: str | None, retry: RetryPolicy | None, timeout: float | None
    ) -> StepSpec:
        step_name = name or str(getattr(fn, "__qualname__", repr(fn)))
        if timeout is not None:
            timeout = check_seconds(timeout, f"timeout of step {step_name!r}", allow_zero=False)
        return StepSpec(
            name=step_name,
            retry=retry or DEFAULT_RETRY,
            is_async=inspect.iscoroutinefunction(fn),
            decoder=build_decoder(return_annotation(fn), f"step {step_name!r}"),
            timeout=timeout,
        )

    # -- workflows --------------------------------------------------------------------------------

    def add_workflow(self, fn: Callable[..., Any], name: str, version: str) -> WorkflowSpec:
        """Register workflow ``name`` at ``version`` (the last registered is the latest).
        Raises ``TypeError`` for a function that is not async or an annotation that cannot be
        rebuilt from JSON."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"workflow {getattr(fn, '__qualname__', fn)!r} must be an async function"
            )
        spec = WorkflowSpec(
            name=name,
            version=version,
            fn=fn,
            input_decoder=build_decoder(
                parameter_annotation(fn, 1), f"the input of workflow {name!r}"
            ),
            decoder=build_decoder(return_annotation(fn), f"workflow {name!r}"),
        )
        versions = self._workflows.setdefault(name, {})
        versions.pop(version, None)
        versions[version] = spec
        return spec

    def workflow_or_none(self, name: str, version: str | None = None) -> WorkflowSpec | None:
        """The spec of ``name`` at ``version`` if registered, else its latest version."""
        versions = self._workflows.get(name)
        if not versions:
            return None
        if version is not None and version in versions:
            return versions[version]
        return next(reversed(versions.values()))

    def workflow(self, name: str, version: str | None = None) -> WorkflowSpec:
        """:meth:`workflow_or_none`, or ``WorkflowNotFound`` naming the known workflows."""
        spec = self.workflow_or_none(name, version)
        if spec is None:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise WorkflowNotFound(f"no workflow named {name!r} is registered (known: {known})")
        return spec

    @property
    def workflow_names(self) -> list[str]:
        return sorted(self._workflows)
