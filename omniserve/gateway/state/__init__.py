"""Where the gateway keeps what several gateway processes must share (``gateway.redis_url``):
in this process (the default: one gateway, no extra service) or in Redis (any number of gateway
processes on any number of hosts; docs/scaling.md)."""
