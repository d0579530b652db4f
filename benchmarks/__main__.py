"""``python -m benchmarks``: the whole suite in one table (see ``benchmarks/run.py``)."""

from benchmarks.run import main

raise SystemExit(main())
