"""One message type per topic is enforced: a mismatched handler stops the worker from starting, a wrong event is never sent."""

import pytest
from faststream.kafka import TestKafkaBroker

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined
from fleet.runtime.broker import ContractViolation, WrongTopic, check_one_type_per_topic, create_broker, publisher_for
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import an_authorization, an_order


def test_the_reference_services_pass_the_check():
    check_one_type_per_topic(create_payments(PaymentsSettings()).broker)


async def test_a_handler_that_expects_another_model_than_its_topic_carries_stops_the_worker_from_starting():
    broker = create_broker("payments")

    @broker.subscriber("orders.placed.v1", group_id="payments")
    async def on_order_placed(payment: PaymentAuthorized) -> None: ...

    with pytest.raises(ContractViolation, match="takes PaymentAuthorized; the registry says OrderPlaced"):
        await broker.start()  # the check comes first: nothing connects to Kafka


def test_a_handler_on_a_topic_outside_the_registry_is_refused():
    broker = create_broker("payments")

    @broker.subscriber("orders.placed.v9", group_id="payments")
    async def on_order_placed(order: OrderPlaced) -> None: ...

    with pytest.raises(ContractViolation, match="unknown topic 'orders.placed.v9'"):
        check_one_type_per_topic(broker)


def test_a_handler_on_two_topics_must_take_both_of_their_models():
    broker = create_broker("notifications")

    @broker.subscriber("payments.authorized.v1", "payments.declined.v1", group_id="notifications")
    async def on_payment_outcome(payment: PaymentAuthorized) -> None: ...

    with pytest.raises(ContractViolation, match="registry says PaymentAuthorized, PaymentDeclined"):
        check_one_type_per_topic(broker)

    good = create_broker("notifications")

    @good.subscriber("payments.authorized.v1", "payments.declined.v1", group_id="notifications")
    async def on_outcome(payment: PaymentAuthorized | PaymentDeclined) -> None: ...

    check_one_type_per_topic(good)


async def test_publishing_an_event_to_a_topic_it_does_not_belong_to_raises_before_anything_is_sent():
    broker = create_broker("payments")
    to_payment_authorized = publisher_for(broker, PaymentAuthorized)
    async with TestKafkaBroker(broker):
        with pytest.raises(WrongTopic, match="OrderPlaced does not belong on payments.authorized.v1"):
            await to_payment_authorized.emit(an_order())
        await to_payment_authorized.emit(an_authorization())
        assert to_payment_authorized._publisher.mock.call_count == 1
