"""Dynamic batching: texts of concurrent requests share one forward pass.

Each request puts its texts on a queue and awaits a future. One task takes requests off the queue
until ``max_batch_size`` texts are gathered or ``max_wait_ms`` have passed since the first, runs
the classifier once (in a worker thread, so the event loop keeps accepting requests), and hands
each request its own rows. A request whose client went away is skipped when results are handed
out; the others are not disturbed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Pending:
    texts: list[str]
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, probabilities, max_batch_size: int, max_wait_ms: float):
        self.probabilities = probabilities  # list[str] -> (N, C) array; called in a worker thread
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """After the server stopped taking requests: finish what is queued, then end."""
        while not self.queue.empty():
            await asyncio.sleep(0.01)
        if self.task is not None:
            self.task.cancel()

    async def submit(self, texts: list[str]) -> np.ndarray:
        """(len(texts), C) probabilities of these texts, computed in a shared batch."""
        pending = Pending(texts, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.future

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            group, size = [first], len(first.texts)
            deadline = first.queued + self.max_wait
            while size < self.max_batch_size:
                try:  # whatever queued while the last batch ran joins at once...
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:  # ...then wait for more until max_wait after the first
                    timeout = deadline - time.perf_counter()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                group.append(nxt)
                size += len(nxt.texts)
            live = [p for p in group if not p.future.done()]  # cancelled: the client disconnected
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            try:
                probs = await asyncio.to_thread(self.probabilities, texts)
            except Exception as e:  # noqa: BLE001 -- one failed batch fails its requests, not the server
                log.error("batch of %d texts failed: %s", len(texts), e)
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(probs[start:start + len(p.texts)])
                start += len(p.texts)
