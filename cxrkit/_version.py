"""The version of cxrkit (its own module, so that any module can import it)."""

__version__ = "0.2.0.dev0"
