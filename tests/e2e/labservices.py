"""Tiny servers and probes that run on lab hosts (`python -m tests.e2e.labservices ...` inside a namespace).

    serve-whoami ADDR PORT [PORT...]   TCP: answer every connection with the address it came from, then close
    whoami ADDR PORT [TIMEOUT]         connect and print what the server saw (exit 1 naming the failure)
    serve-dns ADDR ZONE IP             UDP DNS: A records for every name under ZONE, all pointing at IP
    dns-query SERVER NAME [TIMEOUT]    one A query to SERVER:53; prints the answers as a JSON list

The whoami answer is what proves a route: behind a subnet router the server sees the router's address (SNAT),
through an exit node it sees the exit node's public address, directly it sees the client's own NAT.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset


async def serve_whoami(address: str, ports: list[int]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        writer.write(f"{peer[0]}\n".encode())
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(answer, address, port) for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def whoami(address: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            data = sock.recv(200)
    except OSError as exc:
        print(f"{type(exc).__name__}: {exc}")
        return 1
    print(data.decode().strip())
    return 0


def serve_dns(address: str, zone: str, ip: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    origin = zone.rstrip(".") + "."
    print("ready", flush=True)
    while True:
        wire, client = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            continue
        response = dns.message.make_response(query)
        for question in query.question:
            name = question.name.to_text()
            if question.rdtype == dns.rdatatype.A and (name == origin or name.endswith("." + origin)):
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", ip))
        sock.sendto(response.to_wire(), client)


def dns_query(server: str, name: str, timeout: float) -> int:
    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        response = dns.query.udp(query, server, timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    answers = [
        item.to_text() for rrset in response.answer for item in rrset if rrset.rdtype == dns.rdatatype.A
    ]
    print(json.dumps({"rcode": dns.rcode.to_text(response.rcode()), "answers": answers}))
    return 0


def main(argv: list[str]) -> int:
    verb, *rest = argv
    if verb == "serve-whoami":
        asyncio.run(serve_whoami(rest[0], [int(p) for p in rest[1:]]))
    elif verb == "whoami":
        return whoami(rest[0], int(rest[1]), float(rest[2]) if len(rest) > 2 else 5.0)
    elif verb == "serve-dns":
        serve_dns(rest[0], rest[1], rest[2])
    elif verb == "dns-query":
        return dns_query(rest[0], rest[1], float(rest[2]) if len(rest) > 2 else 5.0)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
