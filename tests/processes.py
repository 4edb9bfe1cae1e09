"""Ending a program a test started: politely first, then for sure."""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def stop_process(
    proc: asyncio.subprocess.Process | None, grace: float = 10.0, *, sig: int = signal.SIGTERM
) -> None:
    """Send `sig` (SIGTERM: let it tidy up), and SIGKILL if it has not exited within `grace` seconds.

    Returns once the process has exited; nothing happens for a process that has already (or was never
    started).
    """
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
