"""Reading a request body with a cap, for the gateway's and the workers' routes."""
from __future__ import annotations

from fastapi import HTTPException, Request


async def read_capped(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``cap`` (never read whole first)."""
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > cap:
        raise HTTPException(413, f"body too large (max {cap} bytes)")
    parts, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:
            raise HTTPException(413, f"body too large (max {cap} bytes)")
        parts.append(chunk)
    return b"".join(parts)
