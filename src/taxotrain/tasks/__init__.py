"""Tasks: what differs between image, signal and embedding (and later metadata) training, one object per task.

See :mod:`taxotrain.tasks.base` for the protocol. Registering a task (``@register_task("name")``) makes it available
as ``task: name`` in configs and to every command.
"""

from taxotrain.tasks.base import (
    InputBatch,
    PredictionRecord,
    StepOutput,
    Task,
    TaskError,
    create_task,
    get_task,
    list_tasks,
    register_task,
)
from taxotrain.tasks.embedding import ImageEmbedding
from taxotrain.tasks.image import ImageClassification
from taxotrain.tasks.signal import SignalClassification

__all__ = ["ImageClassification", "ImageEmbedding", "InputBatch", "PredictionRecord", "SignalClassification",
           "StepOutput", "Task", "TaskError", "create_task", "get_task", "list_tasks", "register_task"]
