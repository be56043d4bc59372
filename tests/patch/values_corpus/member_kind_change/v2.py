"""A method becomes a class-level value and an alias becomes a method (waitress b33f1aeb9f, e902f28836)."""


class Buffer:
    def __init__(self, data=b""):
        self.data = data

    def __nonzero__(self):
        return len(self.data) > 0

    __bool__ = __nonzero__

    _close = None

    def close(self):
        return self._close() if self._close is not None else "nothing to close"


LIVE = Buffer()
