"""The hypervisor layer: the only part of the lab that imports `libvirt`."""
