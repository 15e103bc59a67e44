"""`python -m services.cli`: the `likeness` command."""
import sys

from services.cli import main

sys.exit(main())
