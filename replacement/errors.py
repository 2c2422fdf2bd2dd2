"""Errors of the replacement layer (bad dictionaries, unknown sites or hooks)."""

from __future__ import annotations


class ReplacementError(Exception):
    """Base class of errors a user can cause in the replacement layer."""


class DictionaryError(ReplacementError):
    """A dictionary or dictionary set is unusable: wrong width, unknown hook, missing folder, NaN/inf weights."""


class SiteError(ReplacementError):
    """A site the model or the dictionary set does not have."""
