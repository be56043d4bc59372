def greeting(name: str) -> str:
    return f"v2 hi {name}"
