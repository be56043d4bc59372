"""The library's error types: one per kind of failure, each carrying the message an operator reads and the
outcome it gives an attempt (lifecycle.Outcome).

Errors are raised where a rule is broken and translated once, at the edge: the patcher ends the attempt
with `exc.outcome` and `str(exc)` (patcher.apply_patch / revert_patch), the agent records a refusal the
same way, the CLI prints the reason.
"""

from __future__ import annotations

from livepatch.runtime.lifecycle import Outcome

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:
    from typing import ClassVar


class LivepatchError(Exception):
    """Base class of every error livepatch raises on purpose."""

    outcome: ClassVar[Outcome] = Outcome.FAILED


class PatchRefused(LivepatchError):
    """The patch cannot be applied as it stands; nothing was changed.

    The message says what is wrong and, where there is one, how to fix the patch.
    """

    outcome = Outcome.REFUSED


class PatchAborted(LivepatchError):
    """Quiescence was not reached before the deadline (or the patch failed mid-way); nothing was changed."""

    outcome = Outcome.ABORTED


class PatchFailed(LivepatchError):
    """Something broke during the attempt (a hook raised, the swap failed); nothing was changed."""

    outcome = Outcome.FAILED


class PatchVetoed(PatchRefused):
    """The patch's own pre-patch (or pre-revert) hook refused it."""
