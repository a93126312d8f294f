"""What a handler raises to say how its failure should be treated (never again, or later), and which Kafka errors end a
producer for good."""

__all__ = ["PermanentError", "TransientError", "stops_the_producer"]


class PermanentError(Exception):
    """Retrying cannot help (the event contradicts the service's state, a rule refuses it):
    straight to the dead-letter topic."""


class TransientError(Exception):
    """It may work later (a dependency is down, a lock is taken): retried after growing delays, then dead-lettered."""


def stops_the_producer(error: BaseException) -> bool:
    """A Kafka error the producer does not retry (an out-of-order sequence after a broker failure, say): aiokafka's
    sender then stops for good, and every later send of that producer fails the same way, so only a new one helps."""
    from aiokafka.errors import KafkaError

    return isinstance(error, KafkaError) and not error.retriable
