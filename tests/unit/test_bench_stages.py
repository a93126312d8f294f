"""The per-stage profile (tests/bench/stages.py): every stage measured, a broken input never timed, globals left as found."""

import dataclasses
import itertools
import logging

import pytest
import structlog
from opentelemetry import trace

from contracts import ED25519, HMAC_SHA256
from tests.bench.stages import (
    Stage,
    StageFailed,
    build_inputs,
    measure_stages,
    signature_only_stage,
    stage_table,
    time_stage,
    verify_stage,
)

STAGES = {"verify_ed25519", "ed25519_signature_only", "verify_hmac", "validate", "handler", "sign_ed25519", "sign_hmac",
          "log", "trace_sampled_out", "trace_sampled", "trace_sampled_exported", "faststream_consume"}


@pytest.fixture(scope="module")
def inputs():
    return build_inputs()


def tampered(raw, **changes):
    """The record as delivered, with some of its fields changed after it was signed."""
    return dataclasses.replace(raw, **changes)


def test_every_stage_is_measured_with_positive_figures_and_the_process_globals_are_left_as_found():
    root = logging.getLogger()
    handlers, level, structlog_config, get_tracer = root.handlers[:], root.level, structlog.get_config(), trace.get_tracer

    stages = measure_stages(iterations=20, samples=2)

    assert set(stages) == STAGES
    for name, figures in stages.items():
        assert 0 < figures["min_us"] <= figures["median_us"] <= figures["max_us"], name
        assert figures["cpu_median_us"] > 0 and figures["what"], name
    after = (root.handlers, root.level, structlog.get_config(), trace.get_tracer)
    assert after == (handlers, level, structlog_config, get_tracer)
    assert all(name in stage_table(stages) for name in STAGES)


def test_a_record_whose_value_changed_after_signing_is_never_timed_as_a_verify(inputs):
    raw = inputs.records[ED25519]
    broken = tampered(raw, value=raw.value.replace(b'"EUR"', b'"USD"'))
    with pytest.raises(StageFailed, match="bad_signature|signature does not match"):
        time_stage(verify_stage("verify_ed25519", broken, inputs.keyring), iterations=5, samples=1)


def test_a_record_of_an_unknown_key_is_never_timed_as_a_verify(inputs):
    raw = inputs.records[HMAC_SHA256]
    headers = [(name, b"nobody-knows-me" if name == "ce_keyid" else value) for name, value in raw.headers]
    with pytest.raises(StageFailed, match="unknown key"):
        time_stage(verify_stage("verify_hmac", tampered(raw, headers=headers), inputs.keyring), iterations=5, samples=1)


def test_a_signature_that_does_not_verify_is_never_timed_even_though_verify_only_returns_false(inputs):
    raw = inputs.records[ED25519]
    broken = tampered(raw, value=raw.value + b" ")  # the signing input hashes the value: the signature no longer fits
    with pytest.raises(StageFailed, match="does not verify"):
        time_stage(signature_only_stage(broken, inputs.keyring), iterations=5, samples=1)


def test_a_call_that_stops_working_after_the_first_check_is_caught_after_its_batch():
    answers = itertools.chain([True], itertools.repeat(False))  # right once, then quietly wrong

    def check(ok: bool) -> None:
        if not ok:
            raise StageFailed("flaky: stopped working")

    with pytest.raises(StageFailed, match="stopped working"):
        time_stage(Stage("flaky", "a call that starts failing quietly", lambda: next(answers), check), iterations=20, samples=2)


def test_an_ed25519_verify_costs_more_than_an_hmac_verify(inputs):
    ed25519 = time_stage(verify_stage("verify_ed25519", inputs.records[ED25519], inputs.keyring), iterations=100, samples=3)
    hmac = time_stage(verify_stage("verify_hmac", inputs.records[HMAC_SHA256], inputs.keyring), iterations=100, samples=3)
    # The public-key check is several times the whole HMAC verify on any machine (about 8× on the dev VM).
    assert ed25519["cpu_median_us"] > 2 * hmac["cpu_median_us"]
