"""``python -m ecg_dan``: the ``ecg-dan`` command line."""

import sys

from ecg_dan.cli import main

sys.exit(main())
