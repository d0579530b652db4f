"""The ``taskiq-flow`` command line (``taskiq_flow.cli.main:main``)."""
