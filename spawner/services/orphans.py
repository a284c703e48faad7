"""``stackhub-orphans``: remove the user containers the hub has forgotten (``spawner.core.orphans``).

A hub-managed service (``python -m spawner.services.orphans``): every ``grace / 4`` seconds it lists
this deployment's user containers through the engine and the hub's active servers through the REST
API (``list:users``, ``read:servers``), and removes a container that has been unknown to the hub
for ``hub.orphanGraceSeconds``, logging each. Homes are volumes and are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from spawner.core.config import config_from_env
from spawner.core.orphans import active_servers, orphans

log = logging.getLogger("stackhub.orphans")
SERVICE_NAME = "stackhub-orphans"


class Reaper:
    def __init__(self, *, engine, hub, grace: float):
        self.engine = engine
        self.hub = hub
        self.grace = grace
        self.unknown_since: dict[str, float] = {}

    async def check(self, now: float | None = None):
        now = time.monotonic() if now is None else now
        # the engine first: a container created after this listing cannot be judged by an older list
        objects = await asyncio.to_thread(self.engine.server_objects)
        active = active_servers(await self.hub.users())
        remove, self.unknown_since = orphans(objects, active, self.unknown_since, now, self.grace)
        for obj in remove:
            log.warning("removing %s: %s's server %r, unknown to the hub for %.0f s (a spawn the hub lost when "
                        "it stopped); the home is kept", obj.name, obj.user, obj.server, self.grace)
            try:
                await asyncio.to_thread(self.engine.remove_server, obj)
            except Exception as e:  # noqa: BLE001 - logged; tried again next time
                log.error("could not remove %s: %s", obj.name, e)

    async def run(self):
        every = max(2.0, self.grace / 4)
        log.info("removing user containers unknown to the hub for %.0f s (checked every %.0f s)", self.grace, every)
        while True:
            try:
                await self.check()
            except Exception as e:  # noqa: BLE001 - an engine or hub hiccup: next time
                log.error("orphan check failed: %s", e)
            await asyncio.sleep(every)


def main():
    """Started by the hub (spawner.hub.apply) with the hub's config."""
    from spawner.backends import engine_for
    from spawner.services.hubapi import HubAPI

    cfg = config_from_env()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(levelname).1s %(asctime)s stackhub-orphans] %(message)s")
    hub = HubAPI(api_url=os.environ["JUPYTERHUB_API_URL"], token=os.environ["JUPYTERHUB_API_TOKEN"])
    asyncio.run(Reaper(engine=engine_for(cfg), hub=hub, grace=cfg.hub.orphan_grace_seconds).run())


if __name__ == "__main__":
    main()
