"""The code blocks of docs/: every one is run, or marked as a fragment on purpose."""
