"""The daemon's side of the serial console: a broker per VM (`broker`) fed from the serial log
file (`follower`) and keeping that log's size in check (`log_keeper`).

Daemon-only: scripts, CI and the CLI use `lab.client` (`connect`, `ConsoleSession`), which
talks to these brokers through the daemon's API. Nothing here imports lab.api or lab.client.
"""
