"""uvicorn's Server, told to end live streams when shutting down.

uvicorn waits for open responses before it runs the lifespan shutdown, and an SSE response never
ends by itself; so as soon as the server is asked to exit (signal or ``should_exit``) the app's
``stopping`` event is set: streams finish their current wait and close, workers stop claiming.
"""

from __future__ import annotations

import asyncio

import uvicorn


class ChronosServer(uvicorn.Server):
    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if should_exit or self.should_exit:
            state = getattr(self.config.app, "state", None)
            stopping: asyncio.Event | None = getattr(state, "stopping", None)
            if stopping is not None:
                stopping.set()
        return should_exit
