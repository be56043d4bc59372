class Channel:
    def __init__(self, addr):
        self.addr = addr
        self.requests = 0

    def handle(self):
        self.requests = getattr(self, "requests", 0) + 1

    def describe(self):
        return f"channel {self.addr} requests={getattr(self, 'requests', 0)}"


LIVE = Channel("a")
