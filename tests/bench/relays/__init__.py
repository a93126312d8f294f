"""The relays under test, each a module run in a process of its own (`python -m tests.bench.relays.<name>`)."""
