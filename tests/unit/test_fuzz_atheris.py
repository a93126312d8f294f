"""Coverage-guided fuzzing (atheris) of the verify-and-decode path, as a test: thousands of mutated records, none
crashes it, none is accepted unless a trusted key signed exactly it, each refusal has a known reason, memory bounded."""

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = 20_000


def _fuzz(tmp_path, *options, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz.fuzz_record_path", f"-artifact_prefix={tmp_path}/", "-rss_limit_mb=1024",
         "-max_len=4096", *options],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ | (env or {}),
    )


CORPUS = REPO / "tests" / "fuzz" / "corpus"  # inputs that once failed (an oracle's mistake or a bug): each must pass


def test_twenty_thousand_mutated_records_neither_crash_the_checks_nor_get_through(tmp_path):
    seed = random.randrange(1, 2**31)  # a new path each run; the seed is in the failure message to replay it
    corpus = tmp_path / "corpus"  # a copy: libFuzzer adds what it finds to its first corpus folder
    shutil.copytree(CORPUS, corpus)
    run = _fuzz(tmp_path, f"-runs={RUNS}", f"-seed={seed}", str(corpus))
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-60:])
    assert run.returncode == 0, f"seed {seed}; the input that failed is in {tmp_path}:\n{tail}"
    assert f"Done {RUNS} runs" in run.stderr, tail
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))


def test_the_fuzzer_catches_checks_that_accept_a_forgery(tmp_path):
    run = _fuzz(tmp_path, "-runs=5000", "-seed=7", env={"EVENTFLEET_FUZZ_SELF_CHECK": "accept-anything"})
    assert run.returncode != 0 and "accepted a record no trusted key signed" in run.stdout + run.stderr
    assert list(tmp_path.glob("crash-*")), "libFuzzer saved the input that got through"


def test_the_inputs_that_once_failed_pass():
    """Each saved input, run once: a signed order whose headers were reordered is that order (the wire format gives
    header order no meaning), not a forgery."""
    inputs = sorted(CORPUS.iterdir())
    assert inputs
    run = subprocess.run([sys.executable, "-m", "tests.fuzz.fuzz_record_path", *map(str, inputs)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"Executed {inputs[-1]}" in run.stderr
