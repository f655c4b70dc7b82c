"""``scripts/package`` runs this: ``python -P -m packager`` with ``scripts/`` on PYTHONPATH."""

import sys

from .cli import main

sys.exit(main())
