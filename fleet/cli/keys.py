"""`fleet keys ...`: the signing keys and the keyring (create, list, export, trust, rotate)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import List

import typer

from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import keys_dir

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Signing keys and the keyring (FLEET_KEYS_DIR, default .fleet/keys).", no_args_is_help=True)


def _keyring():
    """The keyring in FLEET_KEYS_DIR; none yet is SigningKeyError ("no keyring at ...; run `fleet keys init`")."""
    from fleet.runtime.keys import KeyStore, keyring_path

    return KeyStore(keyring_path(keys_dir())).keyring()


@keys_app.command("init")
def keys_init(
    alg: str = typer.Option(
        "ed25519",
        "--alg",
        help="ed25519 (default) or hmac-sha256: a shared secret, cheaper to verify, but any verifier could sign too.",
    ),
) -> None:
    """Create a dev key for every service and upstream signer that has none, and trust each for its topics."""
    from contracts.signing import ALGORITHMS
    from fleet.catalog import WORKERS
    from fleet.runtime.keys import UPSTREAM_SIGNERS, init_keys

    if alg not in ALGORITHMS:
        raise CliError(f"unknown algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}", ExitCode.BAD_INPUT)
    created = init_keys(keys_dir(), [*WORKERS, *UPSTREAM_SIGNERS], alg=alg)
    typer.echo("\n".join(f"created {kid}" for kid in created) or f"every signer already has a key in {keys_dir()}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key the keyring trusts: id, algorithm, owner, topics, validity."""
    for key in _keyring().keys.values():
        until = key.not_after.isoformat() if key.not_after else "-"
        since = key.not_before.isoformat() if key.not_before else "-"
        typer.echo(
            f"{key.kid:<40} {key.alg:<12} {key.owner:<14} from {since} until {until}  {','.join(sorted(key.topics))}"
        )


@keys_app.command("public")
def keys_public(kid: str = typer.Argument(..., help="The key id.")) -> None:
    """Print a key's public key as PEM, for a verifier outside the fleet."""
    from contracts import ED25519

    key = _keyring().get(kid)
    if key is None:
        raise CliError(f"no key {kid!r} in the keyring; `fleet keys list` shows its keys", ExitCode.BAD_INPUT)
    if key.alg != ED25519:
        raise CliError(f"{kid} is an {key.alg} key: it has no public half", ExitCode.BAD_INPUT)
    typer.echo(key.to_json()["public_key"].rstrip())


@keys_app.command("trust")
def keys_trust(
    kid: str = typer.Option(..., "--kid", help="The key id the publisher puts in ce_keyid."),
    alg: str = typer.Option("ed25519", "--alg", help="ed25519 or hmac-sha256."),
    public_key: Path | None = typer.Option(None, "--public-key", help="PEM file of an Ed25519 public key."),
    secret_file: Path | None = typer.Option(None, "--secret-file", help="File holding an HMAC secret (base64url)."),
    topic: List[str] = typer.Option(..., "--topic", help="A topic this key may sign (repeat for several)."),
    not_after: datetime | None = typer.Option(
        None,
        "--not-after",
        formats=["%Y-%m-%dT%H:%M:%S%z"],
        help="Last moment the key is valid, e.g. 2027-01-01T00:00:00+00:00.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Change a key id the ring already trusts."),
) -> None:
    """Let an external publisher in: trust its key for the named topics only."""
    from contracts import SigningKeyError, UnknownTopic
    from fleet.runtime.keys import trust_key

    material = public_key if alg == "ed25519" else secret_file
    if material is None:
        raise CliError("--public-key is needed for ed25519, --secret-file for hmac-sha256", ExitCode.BAD_INPUT)
    try:
        trusted = trust_key(keys_dir(), kid, alg, material, topic, not_after=not_after, replace_existing=replace)
    except (SigningKeyError, UnknownTopic) as error:  # a bad key file, a taken key id, a topic the registry lacks
        raise CliError(str(error), ExitCode.BAD_INPUT) from error
    except OSError as error:  # the key file cannot be read
        raise CliError(str(error), ExitCode.NO_INPUT) from error
    typer.echo(
        f"trusted {trusted.kid} ({trusted.alg}) for {', '.join(sorted(trusted.topics))}; "
        "running workers pick it up within seconds"
    )


@keys_app.command("rotate")
def keys_rotate(
    signer: str = typer.Argument(..., help="The service (or upstream signer) whose key to rotate."),
    grace_hours: float = typer.Option(24.0, "--grace-hours", help="How long the old key stays valid for verification."),
    warmup_s: float = typer.Option(
        15.0,
        "--warmup-s",
        help="Seconds before the new key signs: longer than the workers' reload interval "
        "(FLEET_KEYS_RELOAD_EVERY_S, 2 s).",
    ),
) -> None:
    """Add a new key for SIGNER; the old one stays verify-only until the grace period ends. No restarts needed."""
    from datetime import timedelta

    from fleet.runtime.keys import rotate_key

    # No key to rotate is SigningKeyError ("payments has no key to rotate; run `fleet keys init` first"): exit 66.
    grace, warmup = timedelta(hours=grace_hours), timedelta(seconds=warmup_s)
    kid, retired = rotate_key(keys_dir(), signer, grace=grace, warmup=warmup)
    typer.echo(f"new key {kid}; verify-only for {grace_hours:g} h: {', '.join(retired)}")
