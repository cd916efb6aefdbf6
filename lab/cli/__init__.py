"""The `lab` command line: tables for people, `--json` for scripts, meaningful exit codes."""
