"""Circuit discovery over sparse feature graphs: the researcher's layer.

Tasks and datasets (IOI, subject-verb agreement, greater-than, a user's JSONL/CSV files),
dataset schemas, the embedded toy model, model loading, and the ``circuits`` command line.
"""

from circuits.errors import CircuitsError, ModelLoadError, SchemaError, TaskError, VocabularyError
from circuits.schema import Schema, Span
from circuits.tasks import Example, Task, TaskBatch, available_tasks, make_task, metric_per_example

__all__ = [
    "CircuitsError", "ModelLoadError", "SchemaError", "TaskError", "VocabularyError",
    "Schema", "Span", "Example", "Task", "TaskBatch", "available_tasks", "make_task", "metric_per_example",
]
__version__ = "0.1.0"
