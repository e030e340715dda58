"""Quotas kept in Redis, shared by every process and host using the server."""

from callpolicy._quotas.redis.storage import RedisGroup, RedisStorage

__all__ = ["RedisGroup", "RedisStorage"]
