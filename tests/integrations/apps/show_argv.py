"""Prints how it was started (`livepatch run show_argv.py ARGS`), then exits."""

import json
import sys

print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0]}))
