"""`fleet dlq ...`: count each topic's dead letters, show the last ones, replay them onto their original topic."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import typer

from fleet.cli.errors import CliError, ErrorBoundary, ExitCode
from fleet.cli.options import BootstrapOption
from fleet.runtime.settings import operator_connection

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    cls=ErrorBoundary,  # `dlq_app()` on its own fails in one line too
    help="Dead letters (<topic>.dlq): count them, show them, replay them re-signed by the replay key.",
    no_args_is_help=True,
)

TopicArgument = typer.Argument(
    ..., help="A registry topic or its dead-letter topic: orders.placed.v1 or orders.placed.v1.dlq."
)
ReasonOption = typer.Option(None, "--reason", help="Only dead letters with this dlq-reason, e.g. stale.")
JsonOption = typer.Option(False, "--json", help="One JSON document on stdout, for scripts.")


def _dead_letter_topic(name: str) -> str:
    """The dead-letter topic of a registry topic (or the name itself); UnknownTopic lists the registry's: exit 64."""
    from fleet.ops.dlq import dead_letter_topic

    return dead_letter_topic(name)


def _echo_json(document) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


# ---- ls -----------------------------------------------------------------------------------------------------------


def _count_lines(topic: str, counts: Counter | None) -> list[str]:
    """`orders.placed.v1.dlq: 5 dead letter(s)`, then each reason with its count, and under it the count per consumer
    group."""
    if counts is None:
        return [f"{topic}: no such topic on the broker; run `fleet topics apply`"]
    lines = [f"{topic}: {sum(counts.values())} dead letter(s)"]
    for reason in sorted({reason for reason, _group in counts}):
        by_group = {group: n for (r, group), n in sorted(counts.items()) if r == reason}
        lines.append(f"  {reason:<24} {sum(by_group.values()):>7}")
        lines += [f"    group {group:<50} {n:>7}" for group, n in by_group.items()]
    return lines


def _counts_json(counts: Counter | None) -> dict | None:
    if counts is None:
        return None
    by_reason: dict[str, dict] = {}
    for (reason, group), n in sorted(counts.items()):
        entry = by_reason.setdefault(reason, {"total": 0, "by_group": {}})
        entry["total"] += n
        entry["by_group"][group] = n
    return {"total": sum(counts.values()), "by_reason": by_reason}


@dlq_app.command("ls")
def ls(
    topic: str | None = typer.Argument(
        None, help="Only this topic's dead letters (orders.placed.v1 or orders.placed.v1.dlq); default: every topic's."
    ),
    as_json: bool = JsonOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Count the dead letters of each topic by reason and consumer group (read from the beginning up to now; no group)."""  # noqa: E501 (the command's help, line for line)
    from contracts import REGISTRY
    from fleet.ops.dlq import count_dead_letters

    topics = [_dead_letter_topic(topic)] if topic else [t.dead_letter_topic for t in REGISTRY]
    counts = asyncio.run(count_dead_letters(operator_connection(bootstrap), topics))
    if as_json:
        _echo_json({name: _counts_json(found) for name, found in counts.items()})
        return
    for name, found in counts.items():
        typer.echo("\n".join(_count_lines(name, found)))


# ---- show ---------------------------------------------------------------------------------------------------------


def _show_lines(row: dict) -> list[str]:
    """One block per dead letter: where it is and why, where it came from, whose event it is, and its value."""
    origin = f"{row['original_topic']} {row['original_partition']}:{row['original_offset']}"
    return [
        f"{row['dlq_topic']} {row['partition']}:{row['offset']}  {row['failed_at']}  {row['reason']}  key={row['key']}",
        f"  detail  {row['detail']}",
        f"  from    {origin}  group={row['group']}  service={row['service']}",
        f"  event   ce_id={row['ce_id']}  ce_keyid={row['ce_keyid']}",
        f"  value   {row['value']}",
    ]


@dlq_app.command("show")
def show(
    topic: str = TopicArgument,
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the newest dead letters."),
    reason: str | None = ReasonOption,
    as_json: bool = JsonOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Show the last N dead letters, oldest first: why each was refused, where from, its event id and signing key."""
    from fleet.ops.dlq import describe, last_dead_letters

    letters = asyncio.run(
        last_dead_letters(operator_connection(bootstrap), _dead_letter_topic(topic), limit=limit, reason=reason)
    )
    rows = [describe(letter) for letter in letters]
    if as_json:
        _echo_json(rows)
        return
    typer.echo("\n".join(line for row in rows for line in _show_lines(row)) or "no dead letters")


# ---- replay -------------------------------------------------------------------------------------------------------


def _report_json(report) -> dict:
    return {
        "dlq_topic": report.dlq_topic,
        "topic": report.topic,
        "dry_run": report.dry_run,
        "signer": report.signer,
        "moved_by_reason": dict(report.moved_by_reason),
        "moved": [
            {
                "position": r.letter.position,
                "reason": r.letter.reason,
                "ce_id": r.record.envelope.id,
                "key": r.record.key,
            }
            for r in report.moved
        ],
        "skipped": [
            {"position": s.letter.position, "reason": s.letter.reason, "why": s.why, "detail": s.detail}
            for s in report.skipped
        ],
        "left": dict(report.left),
        "already_moved": report.already_moved,
    }


def _report_lines(report, reason: str | None) -> list[str]:
    """What moved (or would), by reason and one line per event; what could not, and why; what is left for later."""
    from fleet.ops.dlq import text_of

    verb = "would move" if report.dry_run else "moved"
    lines = [
        f"{verb} {len(report.moved)} dead letter(s) from {report.dlq_topic} to {report.topic}, "
        f"re-signed by {report.signer}"
    ]
    lines += [f"  {why}: {n}" for why, n in sorted(report.moved_by_reason.items())]
    lines += [
        f"  {r.record.envelope.id}  key={r.record.key}  {r.letter.reason}  from {r.letter.position}"
        for r in report.moved
    ]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} that cannot be replayed:")
        lines += [
            f"  {s.letter.position}  key={text_of(s.letter.key)}  {s.letter.reason}  -> {s.why}: {s.detail}"
            for s in report.skipped
        ]
    if report.left["filtered"]:
        lines.append(f"left {report.left['filtered']} for a later replay (not --reason {reason})")
    if report.left["ledger_full"]:
        lines.append(
            f"left {report.left['ledger_full']} for a later replay: "
            "the ledger of moves behind filtered ones is full; run a plain replay"
        )
    if report.already_moved:
        lines.append(f"passed over {report.already_moved} an earlier replay moved")
    return lines


@dlq_app.command("replay")
def replay(
    topic: str = TopicArgument,
    reason: str | None = ReasonOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print exactly what would move; send and commit nothing."),
    from_beginning: bool = typer.Option(
        False,
        "--from-beginning",
        help="Start over from the oldest dead letter, moving again what earlier replays moved.",
    ),
    as_json: bool = JsonOption,
    bootstrap: str | None = BootstrapOption,
) -> None:
    """Republish dead letters to their original topic, re-signed by the replay key with a fresh ce_time (same ce_id)."""
    from contracts import SigningKeyError
    from fleet.ops.dlq import ReplayKeyError, replay_dead_letters
    from fleet.runtime.keys import REPLAY_SIGNER, KeyStore
    from fleet.runtime.settings import KeySettings

    dlq = _dead_letter_topic(topic)
    try:
        keys = KeyStore.for_signer(KeySettings().dir, REPLAY_SIGNER)
        report = asyncio.run(
            replay_dead_letters(
                operator_connection(bootstrap), dlq, keys, reason=reason, dry_run=dry_run, from_beginning=from_beginning
            )
        )
    except (SigningKeyError, ReplayKeyError) as error:
        raise CliError(f"no usable replay key: {error}", ExitCode.NO_INPUT) from error
    if as_json:
        _echo_json(_report_json(report))
        return
    typer.echo("\n".join(_report_lines(report, reason)))
