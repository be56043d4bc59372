import threading


class Counter:
    def __init__(self, name):
        self.name = name

    def hit(self):
        return self.name


LIVE = Counter("a")
