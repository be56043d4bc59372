# A waitress-like channel (waitress 2e0258d746 "preliminary fix for pipelining"): v2 gives every channel
# an input buffer sized from the adjustments the constructor was given and the channel keeps.


class Adjustments:
    inbuf_overflow = 512

    def __init__(self, inbuf_overflow=512):
        self.inbuf_overflow = inbuf_overflow


class Buffer:
    def __init__(self, overflow):
        self.overflow = overflow
        self.data = b""

    def append(self, data):
        self.data += data
        return len(self.data) <= self.overflow


class Channel:
    def __init__(self, server, adj=None):
        if adj is None:
            adj = Adjustments()
        self.server = server
        self.adj = adj
        self.received = 0

    def received_bytes(self, data):
        self.received += len(data)
        return f"{self.server}:{self.received}"


LIVE = Channel("srv", Adjustments(4))
