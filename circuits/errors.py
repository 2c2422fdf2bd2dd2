"""Error classes a user can cause. Each message names the input and what is wrong."""

from __future__ import annotations

import numbers
from typing import Any


class CircuitsError(Exception):
    """Base class of every error the project raises for bad user input."""


class TaskError(CircuitsError):
    """A task or task file is malformed (missing column, multi-token answer, ...)."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)


class SchemaError(TaskError):
    """A dataset schema does not cover the prompt with ordered, contiguous spans."""


class VocabularyError(TaskError):
    """Text contains words the tokenizer does not know."""


class ModelLoadError(CircuitsError):
    """A model could not be loaded (unknown name, weights not available offline, ...)."""


class CircuitError(CircuitsError):
    """A circuit or graph is unusable (empty, made with another model, size out of range, ...)."""


def check_counts(counts: dict[str, Any], optional: dict[str, Any] | None = None) -> None:
    """Raise :class:`CircuitError` for a value of ``counts`` that is not an integer (not a bool) of at
    least 1, or of ``optional`` that is neither None nor such an integer; the keys name the flags."""
    for flag, value in {**counts, **(optional or {})}.items():
        if value is None and flag in (optional or {}):
            continue
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1):
            or_none = " (or None)" if flag in (optional or {}) else ""
            raise CircuitError(f"{flag} must be an integer of at least 1{or_none}, got {value!r}")


class OutputError(CircuitsError):
    """An output location cannot be written (a file where a folder is wanted, read-only, empty, ...)."""


class OutputLockedError(OutputError):
    """Another run is writing the same output folder (its lock file names the process)."""


class Interrupted(KeyboardInterrupt):
    """A run was interrupted (Ctrl-C or SIGTERM); the message says what was left on disk."""
