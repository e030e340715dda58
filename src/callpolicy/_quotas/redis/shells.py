"""The thin shells of a Redis group (RedisGroup, storage.py): each operation, written once as
steps, run in the calling thread or awaited on the event loop (see callpolicy._steps)."""

from __future__ import annotations

from collections.abc import Sequence

from callpolicy._quotas.memory import Refusal
from callpolicy._quotas.redis.script import Arguments, RedisTaken
from callpolicy._steps import Steps, async_run, run


class Shells:
    """Run the group's operations: `take`, `give_back`, `ended` and `change` (its steps)."""

    arguments: Arguments

    def take(self, cost: float) -> Steps[RedisTaken | Refusal]:
        raise NotImplementedError

    def give_back(self, taken: RedisTaken) -> Steps[None]:
        raise NotImplementedError

    def ended(self, taken: RedisTaken) -> Steps[None]:
        raise NotImplementedError

    def change(self, taken: RedisTaken, new: Sequence[float | None]) -> Steps[None]:
        raise NotImplementedError

    def take_one(self) -> Refusal | None:
        """The fast path: admit a cost of 1 (None), keeping no handle; else the refusal."""
        outcome = run(self.take(1.0))
        return outcome if isinstance(outcome, Refusal) else None

    def try_take(self, cost: float) -> RedisTaken | Refusal:
        return run(self.take(cost))

    async def async_try_take(self, cost: float) -> RedisTaken | Refusal:
        return await async_run(self.take(cost))

    def refund(self, taken: RedisTaken) -> None:
        run(self.give_back(taken))

    async def async_refund(self, taken: RedisTaken) -> None:
        await async_run(self.give_back(taken))

    def release(self, taken: RedisTaken) -> None:
        run(self.ended(taken))

    async def async_release(self, taken: RedisTaken) -> None:
        await async_run(self.ended(taken))

    def adjust(self, taken: RedisTaken, cost: float) -> None:
        run(self.change(taken, self.arguments.adjusted(cost)))

    async def async_adjust(self, taken: RedisTaken, cost: float) -> None:
        await async_run(self.change(taken, self.arguments.adjusted(cost)))
