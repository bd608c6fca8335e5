"""The `milr` command (`main`): it parses, calls the library and renders (`render`); `datacmd`
and `plotcmd` hold the `milr data` and `milr plot` groups."""

from .main import app, main

__all__ = ["app", "main"]
