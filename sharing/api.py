"""Sharing's public face for the gateway: which studies a principal reaches.

Everything else in ``sharing`` is private: import from here.
"""

from sharing.access import reachable

__all__ = ["reachable"]
