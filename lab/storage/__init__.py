"""Storage of the lab: guest images (built and cached) and the files VMs are made of."""
