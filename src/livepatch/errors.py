"""The library's error types: one per kind of failure, each carrying the message an operator reads."""

from __future__ import annotations


class LivepatchError(Exception):
    """Base class of every error livepatch raises on purpose."""


class PatchRefused(LivepatchError):
    """The patch cannot be applied as it stands; nothing was changed.

    The message says what is wrong and, where there is one, how to fix the patch.
    """


class PatchAborted(LivepatchError):
    """Quiescence was not reached before the deadline (or the patch failed mid-way); nothing was changed."""


class PatchVetoed(PatchRefused):
    """The patch's own pre-patch (or pre-revert) hook refused it."""
