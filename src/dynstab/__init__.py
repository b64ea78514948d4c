"""dynstab: dynamical (linear) stability of GD and SGD at minima of neural-network losses."""

from dynstab._version import __version__

__all__ = ["__version__"]
