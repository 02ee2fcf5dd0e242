"""callrelay: live phone calls on the web."""

__version__ = "0.1.0"
