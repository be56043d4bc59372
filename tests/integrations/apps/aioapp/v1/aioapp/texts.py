def greeting(name: str) -> str:
    return f"v1 hello {name}"
