"""Tasks: what differs between image, signal, embedding and place/date prior training, one object per task.

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
from taxotrain.tasks.prior import PlaceDatePrior
from taxotrain.tasks.signal import SignalClassification

__all__ = ["ImageClassification", "ImageEmbedding", "InputBatch", "PlaceDatePrior", "PredictionRecord",
           "SignalClassification", "StepOutput", "Task", "TaskError", "create_task", "get_task", "list_tasks",
           "register_task"]
