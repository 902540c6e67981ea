#!/usr/bin/env python
"""Django's command-line utility for the example: ``python example/manage.py check``."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # Runnable as a script from anywhere: the repository root holds the `example` package.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
