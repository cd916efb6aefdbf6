"""Serial Console Lab: the Azure Serial Console experience on a local machine, offline."""

__version__ = "0.1.0"
