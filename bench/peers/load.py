"""The load generator: ``wrk`` (Debian's package) with one thread, pinned to its own CPU.

The request body is written to a file that the Lua script reads once, so any JSON works; the
script's ``done`` hook prints one JSON line with the counts and latency percentiles.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from . import procs

LUA = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "socket_errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def script(
    workdir: Path, tag: str, body: bytes, headers: dict[str, str], *, delay_ms: float = 0
) -> Path:
    """Write the body and the Lua script that sends it; the script's path.

    ``delay_ms`` makes each connection pause that long before every request, which holds the
    rate near ``connections * 1000 / (delay_ms + latency)``: a steady load, not a flood.
    """
    body_path = workdir / f"{tag}.json"
    body_path.write_bytes(body)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    if delay_ms:
        lines += f"\ndelay = function() return {delay_ms:g} end"
    path = workdir / f"{tag}.lua"
    path.write_text(LUA.format(body=body_path, headers=lines))
    return path


def run(url: str, lua: Path, connections: int, seconds: int) -> dict[str, Any]:
    """One bounded ``wrk`` run (the disk settled first); its counts, the 2xx rate and
    latency percentiles."""
    procs.settle_disk()
    cmd = [
        *procs.pin(procs.LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("{")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {' '.join(tail)}"[:300])
    return summarize(json.loads(line))


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """A load generator's counts (wrk's, or bench/peers/grpc_load.py's) with the 2xx (OK)
    rate and the error count added."""
    secs = result["duration_us"] / 1e6
    ok = result["requests"] - result["non2xx"]
    result["errors"] = result["socket_errors"] + result["non2xx"]
    # Throughput counts answered 2xx requests only: fast error answers are not throughput.
    result["rps"] = ok / secs if secs > 0 else 0.0
    return result
