"""Validated updates (multi-version execution, MVEDSUa): the new version runs in a forked follower that
replays the leader's requests and is promoted only if its replies agree (docs/validated-updates.md).

The mechanism knows no server: a server implements `Host` (host.py) and registers it.
"""

from livepatch.mve.host import Host, Recorder, current, register
from livepatch.mve.outcome import Outcome, State
from livepatch.mve.rules import BUILTIN, RulesError, RuleSet, load_rules_file, ruleset
from livepatch.mve.session import Options, Session

__all__ = [
    "BUILTIN",
    "Host",
    "Options",
    "Outcome",
    "Recorder",
    "RuleSet",
    "RulesError",
    "Session",
    "State",
    "current",
    "load_rules_file",
    "register",
    "ruleset",
]
