"""Value types that Python's builtins do not provide (the sorted set)."""
