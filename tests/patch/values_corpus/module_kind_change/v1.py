"""Module-level names that change kind (kvserver 128171fd48: `hmset_command = hset_command` becomes its
own function; waitress 208bd90a9a: the function `WSGIServer` becomes an alias of a class)."""


def hset_command(argv):
    return len(argv) // 2


hmset_command = hset_command


class TcpServer:
    def __init__(self, app):
        self.app = app

    def kind(self):
        return "tcp"


def WSGIServer(app):
    return ("factory", app)


def dispatch(name, argv):
    handler = hmset_command if name == "hmset" else hset_command
    return handler(argv)
