"""`make bench`: what the relay path costs, from Kafka's own ceiling down to a plain FastStream worker (docs/performance.md)."""
