"""`pip install ./contracts` on its own: eventfleet-contracts signs and verifies records without FastStream or this repo."""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter whose working directory is outside the repo, with the installed copy first on the path.
SIGN_AND_VERIFY = """
import json, sys
from datetime import datetime, timezone
from importlib.resources import files

import contracts
from contracts import Keyring, OrderItem, OrderPlaced, PrivateKey, encode, source_of, verify

key = PrivateKey.generate("package-test")
keyring = Keyring.of([key.public(["orders.placed.v1"])])
order = OrderPlaced(order_id="ord-pkg-1", customer_id="cus-1", items=(OrderItem(sku="SKU-1", quantity=1, unit_price_cents=100),),
                    currency="EUR", total_cents=100, placed_at=datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc))
record = encode(order, source=source_of("storefront"), signer=key)
now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
envelope, event = verify(record.topic, record.key.encode(), record.value, record.raw_headers(), now_ms, keyring)
without_publisher = sorted(name for name in sys.modules if name.split(".")[0] in ("faststream", "fleet", "services", "aiokafka"))
import contracts.publisher
print(json.dumps({
    "package": contracts.__file__,
    "verified": event == order and envelope.signature == record.envelope.signature,
    "vectors": files("contracts").joinpath("vectors/signing-v1.json").read_text(encoding="utf-8"),
    "imported_without_publisher": without_publisher,
    "faststream_with_publisher": "faststream" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built and installed from a copy of contracts/ (the build writes into its source folder) into a folder of its own."""
    work = tmp_path_factory.mktemp("contracts-package")
    source, target = work / "contracts", work / "site"
    shutil.copytree(ROOT / "contracts", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    # The build is isolated, as for anyone running `pip install ./contracts`: the venv's own setuptools cannot build wheels.
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return target


def test_the_installed_package_signs_and_verifies_without_faststream_or_the_repo(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    run = subprocess.run([sys.executable, "-c", SIGN_AND_VERIFY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert Path(result["package"]).is_relative_to(installed), "the installed copy was imported, not the repo's folder"
    assert result["verified"]
    assert result["imported_without_publisher"] == []
    assert result["faststream_with_publisher"] is False
    assert result["vectors"] == (ROOT / "contracts" / "vectors" / "signing-v1.json").read_text(encoding="utf-8")


def test_the_distribution_needs_only_pydantic_cryptography_and_pynacl_with_aiokafka_as_the_publisher_extra(installed):
    [dist] = [d for d in distributions(path=[str(installed)]) if d.metadata["Name"] == "eventfleet-contracts"]
    assert dist.version == "0.1.0"
    assert sorted(dist.requires) == sorted(
        ["pydantic>=2.9", "cryptography>=43", "pynacl>=1.5", 'aiokafka>=0.11; extra == "publisher"']
    )
    installed_files = {str(f) for f in dist.files}
    assert {f.split("/")[0] for f in installed_files if f.endswith(".py")} == {"contracts"}, "one import package: contracts"
    assert {"contracts/__init__.py", "contracts/vectors/signing-v1.json", "contracts/vectors/upcasters/orders.placed.v1-to-v2.json"} <= installed_files
