"""``python -m raftgrpc``: the ``raftgrpc`` command line."""

from __future__ import annotations

import sys

from raftgrpc._ops.cli import main

sys.exit(main())
