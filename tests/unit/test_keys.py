"""Keys on disk: init is idempotent, rotation warms up then retires, workers see changes without a restart."""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from contracts import ED25519, REGISTRY, SigningKeyError, Keyring, PrivateKey
from fleet.runtime.keys import KeyStore, init_keys, keyring_path, private_dir, rotate_key, topics_signed_by, trust_key


def test_init_gives_each_signer_one_key_trusted_for_the_topics_it_owns(tmp_path):
    created = init_keys(tmp_path, ["payments", "storefront", "gateway"])
    assert len(created) == 3
    ring = Keyring.load(keyring_path(tmp_path))
    by_owner = {k.owner: k for k in ring.keys.values()}
    orders = [REGISTRY.named("orders.placed.v1"), REGISTRY.named("orders.placed.v2")]
    assert by_owner["payments"].topics == {"payments.authorized.v1", "payments.declined.v1", *(r for t in orders for r in t.retry_topics)}
    assert by_owner["storefront"].topics == by_owner["gateway"].topics == {"orders.placed.v1", "orders.placed.v2"}
    assert init_keys(tmp_path, ["payments", "storefront", "gateway"]) == []


def test_private_keys_stay_out_of_the_ring_and_are_readable_by_their_owner_only(tmp_path):
    init_keys(tmp_path, ["payments"])
    [key_file] = private_dir(tmp_path, "payments").glob("*.json")
    assert key_file.stat().st_mode & 0o777 == 0o600
    secret = json.loads(key_file.read_text())["secret"]
    assert secret not in keyring_path(tmp_path).read_text()
    assert secret not in repr(PrivateKey.load(key_file))


def test_rotation_adds_a_key_that_signs_after_the_warmup_and_keeps_the_old_one_for_verifying(tmp_path):
    init_keys(tmp_path, ["payments"])
    store = KeyStore.for_signer(tmp_path, "payments", check_every_s=0)
    old = store.signer()
    new_kid, retired = rotate_key(tmp_path, "payments", warmup=timedelta(seconds=30), grace=timedelta(hours=2))
    assert retired == [old.kid]
    now = datetime.now(timezone.utc)
    assert store.signer(now).kid == old.kid, "not yet: verifiers may not have reloaded the ring"
    assert store.signer(now + timedelta(seconds=31)).kid == new_kid
    ring = store.keyring()
    assert ring.get(old.kid).valid_at(now + timedelta(hours=1)) and not ring.get(old.kid).valid_at(now + timedelta(hours=3))
    assert ring.get(new_kid).valid_at(now + timedelta(seconds=31))


def test_a_worker_signs_with_a_rotated_key_once_its_warmup_ends_even_between_two_looks_at_the_disk(tmp_path):
    init_keys(tmp_path, ["payments"])
    # rotate_key counts from a whole second: the new key starts 0.5-1.5 s from now
    new_kid, [old_kid] = rotate_key(tmp_path, "payments", warmup=timedelta(seconds=1.5))
    store = KeyStore.for_signer(tmp_path, "payments", check_every_s=3600)  # the files are read once, here
    assert store.signer().kid == old_kid
    deadline = time.monotonic() + 10
    while store.signer().kid != new_kid and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.signer().kid == new_kid


def test_a_signer_read_again_from_disk_replaces_the_one_chosen_before(tmp_path):
    init_keys(tmp_path, ["payments"])
    store = KeyStore.for_signer(tmp_path, "payments", check_every_s=0)
    old = store.signer()
    new_kid, _ = rotate_key(tmp_path, "payments", warmup=timedelta(0))
    assert store.signer().kid == new_kid != old.kid


def test_rotating_a_signer_without_keys_is_a_clear_error(tmp_path):
    init_keys(tmp_path, ["payments"])
    with pytest.raises(SigningKeyError, match="notifications has no key to rotate"):
        rotate_key(tmp_path, "notifications")


def test_a_running_worker_sees_a_changed_ring_after_its_check_interval(tmp_path):
    init_keys(tmp_path, ["payments"])
    store = KeyStore.for_signer(tmp_path, "payments", check_every_s=0.2)
    before = set(store.keyring().keys)
    stranger = PrivateKey.generate("stranger-1")
    pem = tmp_path / "s.pem"
    pem.write_text(stranger.public_pem())
    trust_key(tmp_path, "stranger-1", ED25519, pem, ["orders.placed.v1"])
    time.sleep(0.3)
    assert set(store.keyring().keys) == before | {"stranger-1"}


def test_trusting_a_key_for_an_unknown_topic_is_refused(tmp_path):
    init_keys(tmp_path, ["payments"])
    pem = tmp_path / "s.pem"
    pem.write_text(PrivateKey.generate("s").public_pem())
    with pytest.raises(LookupError, match="unknown topic"):
        trust_key(tmp_path, "s", ED25519, pem, ["orders.placed.v7"])


def test_the_gateway_signs_what_upstream_systems_own():
    assert topics_signed_by("gateway") == topics_signed_by("storefront") == ["orders.placed.v1", "orders.placed.v2"]


def test_trusting_a_key_id_the_ring_already_has_needs_an_explicit_replace(tmp_path):
    init_keys(tmp_path, ["payments"])
    pem = tmp_path / "s.pem"
    pem.write_text(PrivateKey.generate("s").public_pem())
    trust_key(tmp_path, "s", ED25519, pem, ["orders.placed.v1"])
    with pytest.raises(SigningKeyError, match="already trusts a key 's'"):
        trust_key(tmp_path, "s", ED25519, pem, ["orders.placed.v1", "payments.declined.v1"])
    trust_key(tmp_path, "s", ED25519, pem, ["orders.placed.v1", "payments.declined.v1"], replace_existing=True)
    assert Keyring.load(keyring_path(tmp_path)).get("s").topics == {"orders.placed.v1", "payments.declined.v1"}


def test_a_ring_holding_hmac_secrets_is_readable_by_its_owner_only(tmp_path):
    from contracts import HMAC_SHA256

    init_keys(tmp_path, ["payments"])
    assert keyring_path(tmp_path).stat().st_mode & 0o777 == 0o644
    secret = tmp_path / "secret"
    secret.write_text(PrivateKey.generate("p", HMAC_SHA256).to_json()["secret"])
    trust_key(tmp_path, "p", HMAC_SHA256, secret, ["orders.placed.v1"])
    assert keyring_path(tmp_path).stat().st_mode & 0o777 == 0o600


def test_a_consumer_may_sign_the_retry_topics_of_what_it_consumes_and_nothing_else_of_them():
    consumed = ("orders.placed.v1", "orders.placed.v2", "payments.authorized.v1", "payments.declined.v1", "inventory.backordered.v1",
                "shipments.scheduled.v1")
    assert set(topics_signed_by("notifications")) == {"notifications.sent.v1", *(r for t in consumed for r in REGISTRY.named(t).retry_topics)}


def test_init_brings_the_topics_of_existing_keys_in_line_with_the_registry(tmp_path):
    from dataclasses import replace

    init_keys(tmp_path, ["payments"])
    ring = Keyring.load(keyring_path(tmp_path))
    [key] = ring.keys.values()
    ring.with_key(replace(key, topics=frozenset({"payments.authorized.v1"}))).save(keyring_path(tmp_path))
    init_keys(tmp_path, ["payments"])
    assert Keyring.load(keyring_path(tmp_path)).get(key.kid).topics == set(topics_signed_by("payments"))
