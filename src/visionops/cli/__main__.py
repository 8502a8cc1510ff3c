"""``python -m visionops.cli``: the same commands as ``visionops``."""

from visionops.cli import main

main()
