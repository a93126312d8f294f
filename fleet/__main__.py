"""`python -m fleet` is the `fleet` command."""

from .cli import main

main()
