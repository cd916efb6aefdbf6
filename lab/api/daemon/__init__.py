"""The lab daemon's own API, served over a unix socket in the data dir; the CLI's backend."""
