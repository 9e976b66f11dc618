"""`python -m tillstamp`: the same as the `tillstamp` command."""

from tillstamp.agent.cli import run

run()
