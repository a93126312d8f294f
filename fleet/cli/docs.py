"""`fleet docs ...`, `fleet contracts ...`, `fleet check`: the AsyncAPI document, the contracts, the contract rules.

The document and its site; the contracts' schema revisions and versions (bump, close, retire); `fleet check`."""

from __future__ import annotations

from pathlib import Path

import typer

from fleet.cli.errors import CliError, ExitCode
from fleet.cli.options import BootstrapOption

__all__ = ["check", "contracts_app", "docs_app"]

docs_app = typer.Typer(help="The fleet's AsyncAPI document.", no_args_is_help=True)
contracts_app = typer.Typer(
    help="The events' JSON Schemas, one file per revision in contracts/schemas/<topic>/ (docs/contracts.md).",
    no_args_is_help=True,
)


@docs_app.command("build")
def docs_build(out: Path = typer.Option(Path("docs/site"), "--out", help="The site's folder.")) -> None:
    """Write the offline HTML site (fleet graph + rendered AsyncAPI document) to docs/site/; see docs/asyncapi-docs.md."""  # noqa: E501 (the command's help, line for line)
    from fleet.docs.graph import GraphvizMissing
    from fleet.docs.site import DocsToolsMissing, build_site

    try:
        index = build_site(out)
    except (DocsToolsMissing, GraphvizMissing, ValueError) as error:  # each names the make target that installs it
        raise CliError(str(error), ExitCode.FAILED) from error
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
    """Write asyncapi.yaml from the code: every worker's FastStream specification, completed from the registry and the wire format."""  # noqa: E501 (the command's help, line for line)
    from fleet.docs.asyncapi import DOCUMENT, fleet_document, render, service_document

    target: Path | None
    if service is None:
        text = render(fleet_document())
        target = output or DOCUMENT
    else:
        text = render(service_document(service))  # UnknownService names the fleet's services: exit 64
        target = output
    if target is None:
        typer.echo(text, nl=False)
        return
    target.write_text(text)
    typer.echo(f"wrote {target}")


@contracts_app.command("export")
def contracts_export() -> None:
    """Write revision N+1 of each topic whose model's schema changed compatibly; never overwrites a revision (docs/contracts.md)."""  # noqa: E501 (the command's help, line for line)
    from contracts.governance import EXPORT_DIR, export_schemas

    if not EXPORT_DIR.parent.is_dir():  # an installed fleet, run elsewhere, would start a history of its own here
        raise CliError(
            f"no {EXPORT_DIR.parent}/ folder here: run `fleet contracts export` from the checkout's top folder",
            ExitCode.NO_INPUT,
        )
    written, problems = export_schemas()
    for revision in written:
        shown = revision.path.relative_to(Path.cwd()) if revision.path.is_relative_to(Path.cwd()) else revision.path
        typer.echo(f"wrote {shown}" + (" (the draft revision of a new version, rewritten)" if revision.draft else ""))
    if problems:  # a report, one problem a line: not a one-line failure
        raise CliError(
            "\n".join(map(str, problems)) + f"\n{len(problems)} problem(s); nothing written for those topics",
            ExitCode.FAILED,
        )
    if not written:
        typer.echo("every topic's latest revision is its model's schema: nothing to write")


@contracts_app.command("bump")
def contracts_bump(
    topic: str = typer.Argument(..., help="The current version of an event's topic, e.g. orders.placed.v2."),
) -> None:
    """Scaffold TOPIC's next version: its class, registry topic, upcaster stub, schema revision 1 and a failing test; `fleet check` fails until the upcaster is written (docs/contracts.md)."""  # noqa: E501 (the command's help, line for line)
    from fleet.ops.bump import bump

    if not Path("contracts").is_dir():  # an installed fleet, run elsewhere, has no source to scaffold in
        raise CliError(
            "no contracts/ folder here: run `fleet contracts bump` from the checkout's top folder", ExitCode.NO_INPUT
        )
    done = bump(topic)  # BumpRefused: exit 64, nothing written; BumpFailed: exit 1, every file put back
    plan = done.plan
    for path in done.written:
        typer.echo(f"wrote {path}")
    typer.echo(
        f"{plan.new_topic} ({plan.new_model}) supersedes {plan.old_topic}; next, in order (docs/contracts.md):\n"
        f"  1. change {plan.new_model} in contracts/events.py (every field with a description and examples), then "
        "`fleet contracts export` (it rewrites the draft revision 1 until the upcaster is written)\n"
        f"  2. make each case's output in {plan.vectors_path} what the upcaster must return, write {plan.upcaster} "
        f"in contracts/upcasters.py, drop `scaffolded=True`, and make {plan.test_path} pass\n"
        "  3. `fleet check`: it names what else is missing (the consumers' subscriptions, asyncapi.yaml, the docs)"
    )


def _lifecycle_file(given: Path | None, command: str) -> Path:
    from fleet.ops.retire import LIFECYCLE

    if given is not None:
        return given
    if not LIFECYCLE.parent.is_dir():  # an installed fleet, run elsewhere, would start a lifecycle of its own here
        raise CliError(
            f"no {LIFECYCLE.parent}/ folder here: run `fleet contracts {command}` from the checkout's top folder "
            "(or give --lifecycle)",
            ExitCode.NO_INPUT,
        )
    return LIFECYCLE


LifecycleOption = typer.Option(
    None,
    "--lifecycle",
    help="The lifecycle file to write (default: contracts/lifecycle.json of the checkout here; commit it).",
)


@contracts_app.command("close")
def contracts_close(
    topic: str = typer.Argument(..., help="A superseded version, e.g. orders.placed.v1."),
    lifecycle: Path | None = LifecycleOption,
) -> None:
    """Close TOPIC, a superseded version, for writing (contracts/lifecycle.json): publishers refuse it, `fleet acl apply` takes its producers' write ACLs away; its consumers read what is left (docs/contracts.md)."""  # noqa: E501 (the command's help, line for line)
    from fleet.ops.retire import close

    target = _lifecycle_file(lifecycle, "close")
    done = close(topic, lifecycle_file=target)  # UnknownTopic, LifecycleRefused (the current version): exit 64
    if done.already:
        typer.echo(f"{topic} is closed for writing already (since {done.day}): nothing to do")
        return
    typer.echo(
        f"closed {topic} for writing since {done.day} in {target}: commit it, then `fleet acl apply` (the producers "
        f"lose their write ACLs on it) and deploy the publishers; once no group has lag on it, `fleet contracts "
        f"retire {topic}`"
    )


@contracts_app.command("retire")
def contracts_retire(
    topic: str = typer.Argument(..., help="A superseded version, e.g. orders.placed.v1."),
    no_acls: bool = typer.Option(
        False,
        "--no-acls",
        help="The broker has no authorizer (a plaintext development broker), so it has no ACL to check: retire "
        "anyway. A broker that has ACLs is checked all the same.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check, and write nothing."),
    lifecycle: Path | None = LifecycleOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Retire TOPIC, a superseded version (contracts/lifecycle.json), once no consumer group has lag on it and no ACL lets anyone write it: the registry keeps it, nothing reads or writes it (docs/contracts.md)."""  # noqa: E501 (the command's help, line for line)
    import asyncio

    from fleet.ops.retire import retire
    from fleet.runtime.settings import operator_connection

    target = _lifecycle_file(lifecycle, "retire")
    connection = operator_connection(bootstrap)
    # UnknownTopic, LifecycleRefused (the current version): exit 64; RetireBlocked (lag, ACLs, no authorizer): exit 1.
    done = asyncio.run(retire(connection, topic, lifecycle_file=target, no_acls=no_acls, dry_run=dry_run))
    if done.already:
        typer.echo(f"{topic} is retired already (since {done.day}): nothing to do")
        return
    facts = done.facts
    groups = len({group for lags in (facts.lags if facts else {}).values() for group in lags})
    acls = (
        "the broker has no authorizer (--no-acls)" if facts and facts.writers is None else "no ACL lets anyone write it"
    )
    verb = "would retire" if dry_run else "retired"
    typer.echo(
        f"{verb} {topic} since {done.day} in {target}: none of the {groups} consumer group(s) that read it has lag "
        f"on it, and {acls}"
        + ("" if dry_run else "; next: commit it, `fleet docs gen`, `fleet acl apply`, and deploy the workers")
    )


def check() -> None:
    """Fail when asyncapi.yaml is not what the code generates or a contract rule fails (docs/contracts.md); lists every problem."""  # noqa: E501 (the command's help, line for line)
    from fleet.docs.asyncapi import DOCUMENT, render
    from fleet.docs.governance import all_problems

    current = DOCUMENT.exists() and DOCUMENT.read_text() == render()
    problems, summary = all_problems()
    summary.insert(0, f"asyncapi.yaml is what the code generates: {'ok' if current else '1 problem(s)'}")
    failures = [str(problem) for problem in problems]
    if not current:
        failures.insert(
            0,
            "asyncapi.yaml: [asyncapi-stale] it is not what the code generates\n"
            "    fix: run `fleet docs gen` and commit it",
        )
    if failures:  # a report, every problem with its fix: not a one-line failure
        raise CliError(
            "\n".join(failures) + "\n\n" + "\n".join(summary) + f"\nfleet check failed: {len(failures)} problem(s)",
            ExitCode.FAILED,
        )
    typer.echo("\n".join(summary) + "\nfleet check ok")
