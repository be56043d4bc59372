"""`python -m kvserver [options]`: the same as `livepatch serve kv [options]`."""

from kvserver.cli import main

main()
