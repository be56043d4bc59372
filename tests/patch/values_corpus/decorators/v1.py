import functools

COMMANDS = {}
CALLS = []


def command(name):
    def register(func):
        COMMANDS[name] = func
        return func

    return register


def counted(func):
    @functools.wraps(func)
    def wrapper(*args):
        CALLS.append(func.__name__)
        return func(*args)

    return wrapper


@command("get")
def get(key):
    return f"get {key}"


def ping():
    return "PONG"


@counted
def echo(text):
    return text
