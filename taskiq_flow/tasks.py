"""``@task``: declare a task once, run it on any broker.

Tasks declared this way are taskiq *shared* tasks: every broker finds them by name, so
one module runs unchanged in-process, on ``taskiq-flow worker`` processes and under the
library's engine. A task's name defaults to ``module:function``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from taskiq import async_shared_broker

__all__ = ["task"]

_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def task(func: _F, /) -> Any: ...


@overload
def task(*, name: str | None = None, **labels: Any) -> Callable[[_F], Any]: ...


def task(func: Any = None, /, *, name: str | None = None, **labels: Any) -> Any:
    """Register ``func`` as a shared taskiq task (``@task`` or ``@task(name=...)``).

    ``labels`` are taskiq labels (for example ``timeout=30``).
    """

    def decorate(target: Any) -> Any:
        task_name = name or f"{target.__module__}:{target.__name__}"
        return async_shared_broker.task(task_name=task_name, **labels)(target)

    if func is not None:
        return decorate(func)
    return decorate
