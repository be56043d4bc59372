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
@counted
def get(key):
    return f"GET {key}"


@command("ping")
def ping():
    return "PONG!"


def echo(text):
    return text.upper()
