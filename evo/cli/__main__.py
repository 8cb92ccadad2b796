"""``python -m evo.cli``: the same as the ``evo`` command."""

import sys

from evo.cli.main import main

sys.exit(main())
