"""Client CPU per small JSON POST on kept connections: httpx, httpcore used directly, aiohttp.

    .venv/bin/python -m bench.http_clients [-n 20000] [--slots 64] [--rounds 3]

The PSA client sends one small JSON POST per outbox row over kept connections, one connection
per concurrency slot (bridge/deliver/psa.py). This measures what each library costs the client
for exactly that: a minimal keep-alive HTTP/1.1 server in a *separate process* answers every
request at once with a fixed JSON body, so the figure is the client process's own CPU
(`time.process_time`) per request. Each client library runs `slots` workers, each with its own
single-connection client, as PsaClient does, sending the sync call's body (~700 bytes of JSON,
encoded by the library from a dict as PsaClient hands it over) and reading the JSON answer.
Rounds alternate between the libraries; the best round of each is reported.

aiohttp is not a project dependency: install it anywhere on sys.path (for instance
`pip install --target DIR aiohttp` and MB_EXTRA_PATH=DIR) to include it; it is skipped if absent.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from typing import Any, Awaitable, Callable

BODY = {
    "clientId": "bench", "clientSecret": "s" * 32, "grantType": "client_credentials",
    "scope": "oem", "organizationOemToken": "t" * 40, "integrationId": "integration-1",
    "correlationId": "0b5c7f1e-3f0e-4a57-9a1b-6c2f7f0d9e11",
    "data": {"title": "PROBLEM: web01/HTTP is CRITICAL", "summary": "x" * 300,
             "alertType": "Service", "accountId": "acme", "productGroup": "monitoring",
             "incidentStatus": "OPEN"}}
ANSWER = json.dumps({"statusCode": 200, "message": "created",
                     "data": {"correlationID": BODY["correlationId"]}}).encode()
PATH = "/api/oem-alerts-api/alert/sync"


# -- the server: its own process, answers at once ---------------------------------------------

def _serve(sock: socket.socket) -> None:
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t, self.buf = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                head, sep, rest = self.buf.partition(b"\r\n\r\n")
                if not sep:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if len(rest) < length:
                    return
                self.buf = rest[length:]
                self.t.write(response)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


# -- the clients ------------------------------------------------------------------------------

Sender = Callable[[], Awaitable[None]]


async def _httpx(url: str, slots: int) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    import httpx

    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1,
                                                     max_keepalive_connections=1))
               for _ in range(slots)]

    def sender(c: httpx.AsyncClient) -> Sender:
        async def send() -> None:
            r = await c.post(url, json=BODY)
            json.loads(r.content)
        return send

    async def close() -> None:
        for c in clients:
            await c.aclose()
    return [sender(c) for c in clients], close


async def _httpcore(url: str, slots: int) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    import httpcore

    pools = [httpcore.AsyncConnectionPool(max_connections=1) for _ in range(slots)]
    headers = [(b"content-type", b"application/json")]

    def sender(p: httpcore.AsyncConnectionPool) -> Sender:
        async def send() -> None:
            body = json.dumps(BODY).encode()
            r = await p.request("POST", url, headers=headers, content=body)
            json.loads(r.content)
        return send

    async def close() -> None:
        for p in pools:
            await p.aclose()
    return [sender(p) for p in pools], close


async def _aiohttp(url: str, slots: int) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    import aiohttp

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
                for _ in range(slots)]

    def sender(s: aiohttp.ClientSession) -> Sender:
        async def send() -> None:
            async with s.post(url, json=BODY) as r:
                json.loads(await r.read())
        return send

    async def close() -> None:
        for s in sessions:
            await s.close()
    return [sender(s) for s in sessions], close


CLIENTS = {"httpx": _httpx, "httpcore": _httpcore, "aiohttp": _aiohttp}


async def _round(name: str, url: str, n: int, slots: int) -> dict[str, float]:
    senders, close = await CLIENTS[name](url, slots)
    await asyncio.gather(*(s() for s in senders))  # connect every slot first: kept connections
    left = [n]

    async def worker(send: Sender) -> None:
        while left[0] > 0:
            left[0] -= 1
            await send()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(s) for s in senders))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    return {"cpu_us": cpu / n * 1e6, "wall_s": wall, "rate": n / wall}


def available() -> list[str]:
    out = []
    for name in CLIENTS:
        try:
            __import__(name)
            out.append(name)
        except ImportError:
            pass
    return out


def run(n: int = 20_000, slots: int = 64, rounds: int = 3) -> dict[str, Any]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,),
                                                         daemon=True)
    server.start()
    names = available()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for _ in range(rounds):
            for name in names:
                results[name].append(asyncio.run(_round(name, url, n, slots)))
    finally:
        server.kill()
    best = {name: min(rs, key=lambda r: r["cpu_us"]) for name, rs in results.items()}
    return {"n": n, "slots": slots, "rounds": rounds, "best": best, "all": results,
            "versions": _versions(names), "load": os.getloadavg()}


def _versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in names}


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if os.environ.get("MB_EXTRA_PATH"):
        sys.path.append(os.environ["MB_EXTRA_PATH"])
    r = run(a.n, a.slots, a.rounds)
    for name, b in r["best"].items():
        print(f"{name:9} {r['versions'][name]:8} {b['cpu_us']:7.1f} µs CPU per request"
              f"   {b['rate']:8,.0f} req/s   (rounds: "
              + ", ".join(f"{x['cpu_us']:.0f}" for x in r["all"][name]) + " µs)")
    print(f"n={r['n']} per round, {r['slots']} kept connections, load {r['load']}")
