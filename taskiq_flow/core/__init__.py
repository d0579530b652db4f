"""The scheduling core: one pure state machine that decides what runs next.

It does no I/O. Drivers (the in-process ``ExecutionEngine``, the sequential pipeline,
the Kubernetes operator) feed it events — a step succeeded, a step failed, time passed —
and carry out the actions it returns.
"""

from taskiq_flow.core.actions import (
    Action,
    Cancel,
    Check,
    Dispatch,
    DispatchItem,
    Expand,
    Fail,
    Finish,
    Gather,
    Retry,
    Skip,
)
from taskiq_flow.core.conditions import Condition, ConditionError
from taskiq_flow.core.fanout import Fanout, ItemPhase, keeps
from taskiq_flow.core.ids import task_id
from taskiq_flow.core.machine import MISSING_INPUT, RunMachine
from taskiq_flow.core.plan import NodeSpec, Plan
from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.core.states import Phase, RunOutcome

__all__ = [
    "MISSING_INPUT",
    "Action",
    "Cancel",
    "Check",
    "Condition",
    "ConditionError",
    "Dispatch",
    "DispatchItem",
    "Expand",
    "Fail",
    "Fanout",
    "Finish",
    "Gather",
    "ItemPhase",
    "NodeSpec",
    "Phase",
    "Plan",
    "Retry",
    "RetryPolicy",
    "RunMachine",
    "RunOutcome",
    "Skip",
    "keeps",
    "task_id",
]
