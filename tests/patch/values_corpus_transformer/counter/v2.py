import threading


class Counter:
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.hits = 0

    def hit(self):
        with self.lock:
            self.hits += 1
            return f"{self.name}:{self.hits}"


LIVE = Counter("a")
