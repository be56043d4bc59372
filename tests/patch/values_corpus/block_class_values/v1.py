"""A class moved into a module-level `if` block whose class-level values change (waitress 50c66211a6:
`UnixWSGIServer` under `if hasattr(socket, "AF_UNIX"):`, its getter-only property `family` becoming
the constant `family = socket.AF_UNIX`)."""

import socket


class BaseServer:
    family = socket.AF_INET

    def describe(self):
        return (self.kind(), int(self.family))


class UnixServer(BaseServer):
    limit = 4

    @property
    def family(self):
        return socket.AF_UNIX

    def kind(self):
        return ("unix v1", self.limit)


LIVE = UnixServer()
