"""`python -m livepatch.cli`: the same as the `livepatch` command."""

from livepatch.cli import main

main()
