"""Services: the lab's backends, shared by the daemon's API and (through it) the CLI."""
