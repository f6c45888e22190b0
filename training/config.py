"""TrainConfig: the training recipe, JSON-able, saved whole into the checkpoint's ``config.training``.

It lives in ``geodemo.trainconfig`` (torch-free, so the app's job form validates with it without importing
``training``); this module re-exports it beside the ``--task`` choices.
"""

from __future__ import annotations

from geodemo.trainconfig import TrainConfig

__all__ = ["TrainConfig", "multi_tasks", "task_choices", "tasks_for"]  # + TASK_CHOICES, MULTI_TASKS (lazy)


def task_choices() -> tuple[str, ...]:
    """``--task`` values: every registered head (geodemo.heads), then ``multi`` and ``classify``."""
    from geodemo.heads import TASKS  # here, not at the top: keeps `import training.config` free of torch

    return (*TASKS, "multi", "classify")


def multi_tasks() -> list[str]:
    """The heads of ``--task multi``: those registered with ``multi = True`` (geocell, region, heading)."""
    from geodemo.heads import MULTI_TASKS as heads

    return list(heads)


def __getattr__(name: str):
    """``TASK_CHOICES`` and ``MULTI_TASKS`` are read off the head registry when asked for (PEP 562)."""
    if name == "TASK_CHOICES":
        return task_choices()
    if name == "MULTI_TASKS":
        return multi_tasks()
    raise AttributeError(f"module 'training.config' has no attribute {name!r}")


def tasks_for(task: str) -> list[str]:
    """CLI ``--task`` value -> list of heads (``multi`` = geocell + region + heading)."""
    choices = task_choices()
    if task not in choices:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(choices)}.")
    return multi_tasks() if task == "multi" else [task]
