"""`python -m tillstamp`: the same as the `tillstamp` command."""

from tillstamp.cli import run

run()
