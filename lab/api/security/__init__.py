"""Transport and identity for the Azure-compatible API: the lab's local CA and lab-issued tokens."""
