"""``python -m taskiq_flow_operator``."""

from taskiq_flow_operator.cli import main

main()
