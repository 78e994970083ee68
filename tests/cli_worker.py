"""Run the qasa command line in a subprocess (so that a test can SIGKILL it mid-run)."""

import sys

from qasa.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
