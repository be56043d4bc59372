"""h11's `__init__` (f09b9434e9): `__all__` is a list extended with other lists (`__all__ +=
_events.__all__`); the fix exports two more names. Folded into one value by walk.fold_all_chain."""


class ProtocolError(Exception):
    pass


class LocalProtocolError(ProtocolError):
    pass


class RemoteProtocolError(ProtocolError):
    pass


_EVENTS = ["Request", "Response"]
_STATES = ("CLIENT", "SERVER")

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]
__all__ += _EVENTS
__all__ += _STATES


def exported():
    return ",".join(__all__)
