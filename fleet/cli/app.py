"""The `fleet` command: run a service, provision topics, feed demo orders, watch events, run the local broker and fleet."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import List

import typer

from fleet.catalog import HTTP_SERVICES, WORKERS
from fleet.runtime.settings import KeySettings, operator_connection

app = typer.Typer(
    help="eventfleet: signed, typed events between small async workers on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
)
topics_app = typer.Typer(help="Topics from the registry.", no_args_is_help=True)
kafka_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, single node, 127.0.0.1:9092).", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")
app.add_typer(kafka_app, name="kafka")
from fleet.cli.gateway import gateway_app  # noqa: E402  (a sub-app of its own, kept beside the gateway's code)

app.add_typer(gateway_app, name="gateway")
from fleet.cli.dlq import dlq_app  # noqa: E402

app.add_typer(dlq_app, name="dlq")
from fleet.cli.trace import trace as trace_command  # noqa: E402

app.command("trace")(trace_command)
keys_app = typer.Typer(help="Signing keys and the keyring (FLEET_KEYS_DIR, default .fleet/keys).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

STATE_DIR = Path(".fleet")
BootstrapOption = typer.Option(
    None, "--bootstrap", help="host:port of the brokers (default: FLEET_KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)."
)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def run(service: str = typer.Argument(..., help=f"One of: {', '.join([*WORKERS, *HTTP_SERVICES])}.")) -> None:
    """Run one replica of a service in the foreground (start more copies to scale it)."""
    from fleet.catalog import UnknownService
    from fleet.ops.runner import run_service

    try:
        run_service(service)
    except UnknownService as error:
        _fail(str(error))


@topics_app.command("apply")
def topics_apply(
    bootstrap: str | None = BootstrapOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, change nothing."),
    replication_factor: int = typer.Option(1, "--replication-factor", min=1, help="Replicas of each new topic."),
    min_insync_replicas: int | None = typer.Option(
        None,
        "--min-insync-replicas",
        min=1,
        help="min.insync.replicas of every topic (default: replication factor - 1, at least 1: 1 locally, 2 with 3 replicas).",
    ),
) -> None:
    """Create or update every registry topic (idempotent); prints what it changed (with --dry-run: what it would)."""
    from fleet.ops.topics import apply_topics

    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        _fail(
            f"--min-insync-replicas {min_insync_replicas} > --replication-factor {replication_factor}: every acks=all publish would fail"
        )
    changes = asyncio.run(
        apply_topics(
            operator_connection(bootstrap),
            replication_factor=replication_factor,
            dry_run=dry_run,
            min_insync_replicas=min_insync_replicas,
        )
    )
    for change in changes:
        typer.echo(("would " if dry_run and change.action != "unchanged" else "") + str(change))


@app.command()
def demo(
    orders: int = typer.Option(20, "--orders", min=1, help="How many orders to publish."),
    seed: int | None = typer.Option(None, "--seed", help="Same seed, same orders."),
    stock: bool = typer.Option(
        True, "--stock/--no-stock", help="First play the warehouse: one delivery of every product."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Publish N realistic orders to orders.placed.v1 and exit when the broker has them all."""
    from fleet.ops.demo import DEMO_SERVICE, WAREHOUSE, publish_demo_orders, publish_demo_stock
    from fleet.runtime.keys import KeyStore

    keys_dir = KeySettings().dir
    if stock:
        asyncio.run(
            publish_demo_stock(operator_connection(bootstrap), KeyStore.for_signer(keys_dir, WAREHOUSE).signer())
        )
    signer = KeyStore.for_signer(keys_dir, DEMO_SERVICE).signer()
    envelopes = asyncio.run(publish_demo_orders(operator_connection(bootstrap), orders, signer, seed=seed))
    typer.echo(f"published {len(envelopes)} orders; the broker has them all")


@app.command()
def watch(
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Replay the topics' history first."),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Print every event on the registry's topics as one line, with its key and correlation id (Ctrl-C stops)."""
    from fleet.ops.watch import watch_events

    async def main() -> None:
        await watch_events(operator_connection(bootstrap), typer.echo, asyncio.Event(), from_beginning=from_beginning)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def _scale_pairs(pairs: List[str], *, known: tuple[str, ...] = WORKERS) -> dict[str, int]:
    """`payments=3 inventory=2` → {"payments": 3, "inventory": 2}; a bad pair fails the command."""
    wanted: dict[str, int] = {}
    for pair in pairs:
        service, sep, count = pair.partition("=")
        if not sep or not count.strip().isdigit():
            _fail(f"{pair!r}: expected SERVICE=N, e.g. payments=3")
        if service not in known:
            _fail(f"unknown service {service!r}; the fleet has: {', '.join(known)}")
        wanted[service] = int(count)
    return wanted


@app.command()
def up(
    services: List[str] | None = typer.Argument(None, help="Services to run (default: all)."),
    scale: List[str] = typer.Option(
        [], "--scale", help="SERVICE=N: run N replicas of SERVICE (repeatable; default 1 each)."
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Feed demo orders (a burst, then a trickle) and show events as they flow."
    ),
    orders: int = typer.Option(20, "--orders", min=0, help="Size of the demo burst."),
    every: float = typer.Option(2.0, "--every", min=0.0, help="Seconds between trickled demo orders (0: no trickle)."),
) -> None:
    """Start the broker if needed, apply topics, run the services as processes (replica n of a service serves /metrics
    on its port + 10*(n-1)); `fleet scale` changes replicas while it runs; Ctrl-C or `fleet down` stops everything."""
    from fleet.ops.up import run_fleet
    from fleet.runtime.observe.logs import configure_logging

    chosen = services or list(WORKERS)
    unknown = sorted(set(chosen) - set(WORKERS))
    if unknown:
        _fail(f"unknown service(s) {', '.join(unknown)}; the fleet has: {', '.join(WORKERS)}")
    replicas = _scale_pairs(scale)
    configure_logging("fleet-up")
    try:
        asyncio.run(
            run_fleet(
                [*chosen, *(s for s in replicas if s not in chosen)],
                state_dir=STATE_DIR,
                emit=typer.echo,
                demo_orders=orders if demo else 0,
                trickle_every_s=every if demo else 0.0,
                scale=replicas,
            )
        )
    except RuntimeError as error:
        _fail(str(error))


@app.command("scale")
def scale_command(
    pairs: List[str] = typer.Argument(..., help="SERVICE=N ... e.g. payments=3 (0 stops every replica of it)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the running fleet to answer."),
) -> None:
    """Change the replica count of services in the running `fleet up`; scaling down stops the highest-numbered
    replicas with SIGTERM and waits for their graceful exit."""
    from fleet.ops.up import request_scale

    wanted = _scale_pairs(pairs)
    try:
        outcome = request_scale(STATE_DIR, wanted, timeout_s=timeout)
    except (LookupError, TimeoutError) as error:
        _fail(str(error))
    if outcome.get("error"):
        _fail(outcome["error"])
    started, stopped = outcome.get("started", []), outcome.get("stopped", [])
    typer.echo(
        ", ".join(f"{s}={n}" for s, n in wanted.items())
        + ": "
        + "; ".join(
            part
            for part in (
                f"started {', '.join(started)}" if started else "",
                f"stopped {', '.join(stopped)}" if stopped else "",
            )
            if part
        )
        or "nothing to change"
    )


@app.command()
def down(timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the fleet to stop.")) -> None:
    """Stop the running `fleet up` (its replicas gracefully, and the broker if it started it)."""
    from fleet.ops.up import state_file_of, stop_fleet

    try:
        pid = stop_fleet(STATE_DIR, timeout_s=timeout)
    except TimeoutError as error:
        _fail(str(error))
    if pid is None:
        typer.echo(f"no local fleet is running (no live `fleet up` in {state_file_of(STATE_DIR)}): nothing to stop")
        return
    typer.echo(f"fleet up (pid {pid}) stopped")


@app.command()
def status(
    services: List[str] | None = typer.Argument(None, help="Services to show (default: all)."),
    watch_: bool = typer.Option(False, "--watch", help="Refresh live until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document, for scripts."),
    interval: float = typer.Option(
        1.0,
        "--interval",
        min=0.0,
        help="Seconds between the two looks events/s is measured from (--watch: between refreshes).",
    ),
    state_file: Path | None = typer.Option(
        None, "--state-file", help="The local fleet's state file (default .fleet/fleet.json)."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Per service: replicas, consumer group state and members, partitions per member, lag, events/s, dead letters."""
    import json
    import os

    from fleet.ops.status import local_fleet, status_document, table_of, watch_status
    from fleet.ops.up import state_file_of

    chosen = services or list(WORKERS)
    unknown = sorted(set(chosen) - set(WORKERS))
    if unknown:
        _fail(f"unknown service(s) {', '.join(unknown)}; the fleet has: {', '.join(WORKERS)}")
    state_file = state_file or state_file_of(STATE_DIR)
    local = local_fleet(state_file)
    # A running local fleet knows its broker; --bootstrap and FLEET_KAFKA_BOOTSTRAP_SERVERS come first.
    address = operator_connection(
        bootstrap or os.environ.get("FLEET_KAFKA_BOOTSTRAP_SERVERS") or (local or {}).get("bootstrap")
    )
    if watch_:
        try:
            asyncio.run(watch_status(address, chosen, state_file=state_file, interval_s=max(interval, 0.5)))
        except KeyboardInterrupt:
            pass
        return
    try:
        document = asyncio.run(status_document(address, chosen, state_file=state_file, interval_s=interval))
    except Exception as error:  # no broker: say so plainly (a refused password is named by main)
        from aiokafka.errors import KafkaConnectionError

        if address.secure and isinstance(error, KafkaConnectionError):
            raise
        _fail(f"could not read the fleet's groups from {address}: {type(error).__name__}: {error}")
    if as_json:
        typer.echo(json.dumps(document, indent=1))
        return
    from rich.console import Console

    Console().print(table_of(document))


@kafka_app.command("start")
def kafka_start(
    timeout: float = typer.Option(90.0, help="Seconds to wait for the broker to answer."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="A new broker gets TLS, SASL/SCRAM-SHA-512 (a user per service) and "
        "ACLs (docs/security.md); an existing broker keeps the mode it was formatted with.",
    ),
) -> None:
    """Start the local broker (assembling it from Maven Central the first time); returns when it answers."""
    from fleet.local import kafka as kafka_local

    try:
        from fleet.ops.acls import fleet_users

        typer.echo(kafka_local.start(timeout=timeout, secure=secure or None, users=fleet_users()))
    except Exception as error:  # the launcher's errors carry the broker log's tail: show them, fail the command
        _fail(f"the local Kafka broker did not start: {error}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker by its PID."""
    from fleet.local import kafka as kafka_local

    typer.echo(kafka_local.stop())


@kafka_app.command("status")
def kafka_status() -> None:
    """Is the local broker running and answering?"""
    from fleet.local import kafka as kafka_local

    typer.echo(str(kafka_local.status()))


@kafka_app.command("logs")
def kafka_logs(lines: int = typer.Option(200, "--lines", "-n", help="How many lines from the end.")) -> None:
    """Show the end of the local broker's log."""
    from fleet.local import kafka as kafka_local

    path = kafka_local.log_path()
    if not path.exists():
        _fail(f"no broker log yet at {path}")
    typer.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


docs_app = typer.Typer(help="The fleet's AsyncAPI document.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")


@docs_app.command("build")
def docs_build(out: Path = typer.Option(Path("docs/site"), "--out", help="The site's folder.")) -> None:
    """Write the offline HTML site (fleet graph + rendered AsyncAPI document) to docs/site/; see docs/asyncapi-docs.md."""
    from fleet.docs.graph import GraphvizMissing
    from fleet.docs.site import DocsToolsMissing, build_site

    try:
        index = build_site(out)
    except (DocsToolsMissing, GraphvizMissing, ValueError) as error:
        _fail(str(error))
    typer.echo(f"wrote {index} (open it from disk, or `fleet docs serve`)")


@docs_app.command("serve")
def docs_serve(
    port: int = typer.Option(8100, "--port", help="The port on 127.0.0.1."),
    out: Path = typer.Option(Path("docs/site"), "--out", help="The site's folder (built first if missing)."),
) -> None:
    """Serve docs/site/ on 127.0.0.1 with a plain static server until Ctrl-C (builds the site first if missing)."""
    from fleet.docs.site import serve_site

    if not (out / "index.html").exists():
        docs_build(out)
    typer.echo(f"serving {out} on http://127.0.0.1:{port}/ (Ctrl-C stops)")
    serve_site(out, port=port)


@docs_app.command("gen")
def docs_gen(
    service: str | None = typer.Option(
        None,
        "--service",
        help="Only what this service sends and receives (e.g. payments); written to stdout unless --output is given.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write here instead (default: asyncapi.yaml for the whole fleet, stdout for --service).",
    ),
) -> None:
    """Write asyncapi.yaml from the code: every worker's FastStream specification, completed from the registry and the wire format."""
    from fleet.docs.asyncapi import DOCUMENT, UnknownService, fleet_document, render, service_document

    if service is None:
        text = render(fleet_document())
        target = output or DOCUMENT
    else:
        try:
            text = render(service_document(service))
        except UnknownService as error:
            _fail(str(error))
        target = output
    if target is None:
        typer.echo(text, nl=False)
        return
    target.write_text(text)
    typer.echo(f"wrote {target}")


contracts_app = typer.Typer(
    help="The events' JSON Schemas, one file per revision in contracts/schemas/<topic>/ (docs/contracts.md).",
    no_args_is_help=True,
)
app.add_typer(contracts_app, name="contracts")


@contracts_app.command("export")
def contracts_export() -> None:
    """Write revision N+1 of each topic whose model's schema changed compatibly; never overwrites a revision (docs/contracts.md)."""
    from contracts.governance import EXPORT_DIR, export_schemas

    if not EXPORT_DIR.parent.is_dir():  # an installed fleet, run elsewhere, would start a history of its own here
        _fail(f"no {EXPORT_DIR.parent}/ folder here: run `fleet contracts export` from the checkout's top folder")
    written, problems = export_schemas()
    for revision in written:
        typer.echo(
            f"wrote {revision.path.relative_to(Path.cwd()) if revision.path.is_relative_to(Path.cwd()) else revision.path}"
        )
    if problems:
        _fail("\n".join(map(str, problems)) + f"\n{len(problems)} problem(s); nothing written for those topics")
    if not written:
        typer.echo("every topic's latest revision is its model's schema: nothing to write")


@app.command()
def check() -> None:
    """Fail when asyncapi.yaml is not what the code generates or a contract rule fails (docs/contracts.md); lists every problem."""
    from fleet.docs.asyncapi import DOCUMENT, render
    from fleet.docs.governance import all_problems

    current = DOCUMENT.exists() and DOCUMENT.read_text() == render()
    problems, summary = all_problems()
    summary.insert(0, f"asyncapi.yaml is what the code generates: {'ok' if current else '1 problem(s)'}")
    failures = [str(problem) for problem in problems]
    if not current:
        failures.insert(
            0,
            "asyncapi.yaml: [asyncapi-stale] it is not what the code generates\n    fix: run `fleet docs gen` and commit it",
        )
    if failures:
        _fail("\n".join(failures) + "\n\n" + "\n".join(summary) + f"\nfleet check failed: {len(failures)} problem(s)")
    typer.echo("\n".join(summary) + "\nfleet check ok")


def _keys_dir() -> Path:
    return KeySettings().dir


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
    from fleet.runtime.keys import UPSTREAM_SIGNERS, init_keys

    if alg not in ALGORITHMS:
        _fail(f"unknown algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")
    created = init_keys(_keys_dir(), [*WORKERS, *UPSTREAM_SIGNERS], alg=alg)
    typer.echo("\n".join(f"created {kid}" for kid in created) or f"every signer already has a key in {_keys_dir()}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key the keyring trusts: id, algorithm, owner, topics, validity."""
    from contracts import Keyring
    from fleet.runtime.keys import keyring_path

    for key in Keyring.load(keyring_path(_keys_dir())).keys.values():
        until = key.not_after.isoformat() if key.not_after else "-"
        since = key.not_before.isoformat() if key.not_before else "-"
        typer.echo(
            f"{key.kid:<40} {key.alg:<12} {key.owner:<14} from {since} until {until}  {','.join(sorted(key.topics))}"
        )


@keys_app.command("public")
def keys_public(kid: str = typer.Argument(..., help="The key id.")) -> None:
    """Print a key's public key as PEM, for a verifier outside the fleet."""
    from contracts import ED25519, Keyring
    from fleet.runtime.keys import keyring_path

    key = Keyring.load(keyring_path(_keys_dir())).get(kid)
    if key is None:
        _fail(f"no key {kid!r} in the keyring")
    if key.alg != ED25519:
        _fail(f"{kid} is an {key.alg} key: it has no public half")
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
        _fail("--public-key is needed for ed25519, --secret-file for hmac-sha256")
    try:
        trusted = trust_key(_keys_dir(), kid, alg, material, topic, not_after=not_after, replace_existing=replace)
    except (SigningKeyError, UnknownTopic, OSError) as error:
        _fail(str(error))
    typer.echo(
        f"trusted {trusted.kid} ({trusted.alg}) for {', '.join(sorted(trusted.topics))}; running workers pick it up within seconds"
    )


@keys_app.command("rotate")
def keys_rotate(
    signer: str = typer.Argument(..., help="The service (or upstream signer) whose key to rotate."),
    grace_hours: float = typer.Option(24.0, "--grace-hours", help="How long the old key stays valid for verification."),
    warmup_s: float = typer.Option(
        15.0,
        "--warmup-s",
        help="Seconds before the new key signs: longer than the workers' reload interval (FLEET_KEYS_RELOAD_EVERY_S, 2 s).",
    ),
) -> None:
    """Add a new key for SIGNER; the old one stays verify-only until the grace period ends. No restarts needed."""
    from datetime import timedelta

    from contracts import SigningKeyError
    from fleet.runtime.keys import rotate_key

    try:
        kid, retired = rotate_key(
            _keys_dir(), signer, grace=timedelta(hours=grace_hours), warmup=timedelta(seconds=warmup_s)
        )
    except SigningKeyError as error:
        _fail(str(error))
    typer.echo(f"new key {kid}; verify-only for {grace_hours:g} h: {', '.join(retired)}")


@app.command()
def publish(
    topic: str = typer.Argument(..., help="A registry topic, e.g. orders.placed.v1."),
    json_text: str = typer.Option(..., "--json", help="The event as JSON."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Private key file to sign with (default: the topic owner's dev key)."
    ),
    correlation_id: str | None = typer.Option(
        None, "--correlation-id", help="The flow this event belongs to (default: a new one)."
    ),
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Validate, sign and publish one event; prints its id. Bad input prints every error and exits non-zero."""
    from pydantic import ValidationError

    from contracts import REGISTRY, SigningKeyError, PrivateKey, UnknownTopic, describe_errors
    from contracts.publisher import Publisher
    from fleet.runtime.keys import KeyStore

    try:
        target = REGISTRY.named(topic)
        event = target.model.model_validate_json(json_text)
        signer = PrivateKey.load(key_file) if key_file else KeyStore.for_signer(_keys_dir(), target.owner).signer()
    except UnknownTopic as error:
        _fail(str(error))
    except ValidationError as error:
        _fail(f"invalid {target.model.__name__}:\n  " + describe_errors(error).replace("; ", "\n  "))
    except (SigningKeyError, OSError) as error:
        _fail(f"no signing key: {error}")

    async def send():
        async with Publisher(operator_connection(bootstrap), service=target.owner, signer=signer) as publisher:
            return await publisher.publish(event, correlation_id=correlation_id)

    envelope = asyncio.run(send())
    typer.echo(f"{envelope.id} correlation_id={envelope.correlation_id}")


def main() -> None:
    from aiokafka.errors import KafkaConnectionError

    from contracts.connection import ConnectionSettingsError
    from fleet.runtime.access import EXIT_ACCESS_DENIED, KafkaAccessDenied, authenticate
    from fleet.runtime.settings import last_operator_connection

    try:
        try:
            app()
        except KafkaConnectionError:
            # aiokafka says "Unable to bootstrap" for a refused password too: log in once to tell which it was.
            if (connection := last_operator_connection()) is not None:
                asyncio.run(authenticate(connection))
            raise
    except KafkaAccessDenied as denial:  # refused by the broker: one line, not a traceback
        typer.secho(str(denial), fg=typer.colors.RED, err=True)
        raise SystemExit(EXIT_ACCESS_DENIED) from None
    except ConnectionSettingsError as error:  # incomplete TLS/SASL settings
        typer.secho(f"Kafka connection settings: {error}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


acl_app = typer.Typer(
    help="Kafka ACLs per service, derived from the registry and the services' wiring.", no_args_is_help=True
)
app.add_typer(acl_app, name="acl")
AclUsersOption = typer.Option(
    None, "--service", help="Only these users: workers, gateway or upstream systems (repeatable)."
)


def _chosen_acls(service: List[str] | None) -> tuple[list, list[str]]:
    from fleet.catalog import service_wiring
    from fleet.ops.acls import fleet_acls, fleet_users

    users = list(fleet_users())
    chosen = service or users
    unknown = sorted(set(chosen) - set(users))
    if unknown:
        _fail(f"unknown user(s) {', '.join(unknown)}; the fleet's users are {', '.join(users)}")
    return fleet_acls(service_wiring([s for s in chosen if s in WORKERS]), services=chosen), chosen


@acl_app.command("plan")
def acl_plan(service: List[str] | None = AclUsersOption) -> None:
    """Print the ACLs each user needs: a worker reads its input topics in its groups, writes its outputs and the retry
    and dead-letter topics of its inputs; gateway and upstream systems write the topics they own; nothing else."""
    for acl in _chosen_acls(service)[0]:
        typer.echo(str(acl))


@acl_app.command("apply")
def acl_apply(
    service: List[str] | None = AclUsersOption,
    bootstrap: str | None = BootstrapOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be added and removed, change nothing."),
) -> None:
    """Make the broker's ACLs for the fleet's users exactly `fleet acl plan`: add what is missing, remove what they no
    longer need (other principals' ACLs are never touched). Connects as an operator (admin on the local secure broker)."""
    from fleet.ops.acls import apply_acls

    desired, users = _chosen_acls(service)
    connection = operator_connection(bootstrap)
    plan = asyncio.run(apply_acls(connection, desired, users, dry_run=dry_run))
    verb = "would " if dry_run else ""
    for acl in plan.add:
        typer.echo(f"{verb}add    {acl}")
    for acl in plan.remove:
        typer.echo(f"{verb}remove {acl}")
    typer.echo(
        f"{connection}: {len(plan.add)} {verb}added, {len(plan.remove)} {verb}removed, {len(plan.keep)} unchanged"
    )
