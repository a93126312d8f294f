"""Consumer groups as the broker sees them: which of the fleet's groups have live members."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

__all__ = ["group_members"]


async def group_members(bootstrap_servers: str, group_ids: list[str]) -> dict[str, int]:
    """How many members each group has right now (0 for an empty or unknown group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="fleet-groups")
    await admin.start()
    try:
        members = {group_id: 0 for group_id in group_ids}
        # One group per request: aiokafka 0.14's DescribeGroups with several groups makes a 4.x broker close the connection.
        for group_id in group_ids:
            for response in await admin.describe_consumer_groups([group_id]):
                for group in response.to_object()["groups"]:
                    if group["error_code"] == 0 and group["group"] in members:
                        members[group["group"]] = len(group["members"])
        return members
    finally:
        await admin.close()
