"""The chaos harness (`make chaos`): the whole fleet as separate processes on a broker of its own, with faults injected."""
