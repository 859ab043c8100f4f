"""``python -m routing.router``: exactly ``statement-router router``.

For tests and tools that start the router as a separate process from the interpreter
(the crash and scale-out tests SIGKILL it) without relying on the console script; the
settings, logging, metrics endpoint, connector catalogue and exit codes are the CLI's.

The one import from the router up to the entry points: this module is an entry point that
Python requires inside the package. ``lint-imports`` allows exactly this import (the
``layers`` contract's ``ignore_imports`` in pyproject.toml); the rest of the router
package never imports the entry points.
"""

from __future__ import annotations

import sys

from routing.entrypoints.cli.main import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "router", *sys.argv[1:]]
    main()
