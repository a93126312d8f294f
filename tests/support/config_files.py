"""Reading the local brokers' configuration files as the JVM reads them."""


def properties(text: str) -> dict[str, str]:
    """A Java properties file as a dict; as in Java, the last line of a key wins (the secure broker relies on it)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
