"""HTTP: the daemon's own API over its unix socket, and (later) the Azure-compatible API."""
