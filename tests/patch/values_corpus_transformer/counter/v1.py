import threading  # noqa: F401 - v2 uses it: the import is unchanged between the versions


class Counter:
    def __init__(self, name):
        self.name = name

    def hit(self):
        return self.name


LIVE = Counter("a")
