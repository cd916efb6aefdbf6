"""The Azure-compatible REST API (ARM shapes): what the official SDKs and CLI talk to."""
