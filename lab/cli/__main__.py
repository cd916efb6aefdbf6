"""`python -m lab.cli`: the `lab` command (how `lab up` starts the daemon)."""

from lab.cli.main import main

main()
