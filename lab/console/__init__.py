"""The console: per-VM brokers in the lab daemon, and the clients that talk to them."""
