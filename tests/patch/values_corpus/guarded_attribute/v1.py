class Channel:
    def __init__(self, addr):
        self.addr = addr

    def describe(self):
        return f"channel {self.addr}"


LIVE = Channel("a")
