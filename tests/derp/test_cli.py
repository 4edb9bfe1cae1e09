"""The standalone server: flags, persisted key, TLS from files, STUN, DERPMap snippet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from derp import frames, stun
from derp.__main__ import main, mesh_urls, split_host_port
from derp.client import DerpClient
from derp.config import ConfigError, load_or_create_private_key
from derp.derpmap import single_region_derpmap
from tests.derp.harness import within
from tests.pki import make_pki
from tests.ports import free_port
from tests.processes import stop_process


async def wait_for_tcp(port: int) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


@contextlib.asynccontextmanager
async def derper(args: Sequence[str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "derp",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        await stop_process(process)


def test_listen_address_forms() -> None:
    assert split_host_port(":443") == ("", 443)
    assert split_host_port("127.0.0.1:3340") == ("127.0.0.1", 3340)
    assert split_host_port("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError):
        split_host_port("localhost")


def test_mesh_with_accepts_hostnames_and_urls() -> None:
    assert mesh_urls("derp1.example.com, http://10.0.0.2:8080/derp,") == [
        "https://derp1.example.com/derp",
        "http://10.0.0.2:8080/derp",
    ]


def test_private_key_file_is_created_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "derper.key"
    first = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc == {"PrivateKey": first.to_text()}
    assert load_or_create_private_key(path) == first
    path.write_text('{"PrivateKey": "nodekey:00"}')
    with pytest.raises(ConfigError):
        load_or_create_private_key(path)


def test_derpmap_snippet() -> None:
    derpmap = single_region_derpmap("derp.example.com", derp_port=443, stun_port=None, ipv4="192.0.2.9")
    node = derpmap["Regions"]["900"]["Nodes"][0]
    assert node == {
        "Name": "900a",
        "RegionID": 900,
        "HostName": "derp.example.com",
        "DERPPort": 443,
        "STUNPort": -1,
        "IPv4": "192.0.2.9",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["-a", "127.0.0.1:443", "-c", "{tmp}/k.json"],  # 443 without TLS
        ["-a", "127.0.0.1:0", "-c", "{tmp}/k.json", "--mesh-with", "peer.example.com"],  # no mesh key
        ["-a", "127.0.0.1:0", "-c", "{tmp}/k.json", "--verify-clients"],  # nothing to verify against
        ["-a", "127.0.0.1:0"],  # no config path
        ["-a", "127.0.0.1:0", "-c", "{tmp}/k.json", "--tls-cert", "{tmp}/missing.crt"],  # half a pair
    ],
    ids=["443-plain", "mesh-no-key", "verify-no-url", "no-config", "half-tls"],
)
def test_bad_flag_combinations_exit_nonzero(tmp_path: Path, args: list[str]) -> None:
    assert main([a.format(tmp=tmp_path) for a in args]) == 1


async def test_standalone_with_tls_stun_and_persisted_key(tmp_path: Path) -> None:
    pki = make_pki(
        tmp_path / "certs",
        ["derp.test"],
        ["127.0.0.1"],
        file_names=("ca.crt", "derp.test.crt", "derp.test.key"),
    )
    port, http_port, stun_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "derper.json"
    args = [
        "-a",
        f"127.0.0.1:{port}",
        "-c",
        str(config),
        "--hostname",
        "derp.test",
        "--certmode",
        "manual",
        "--certdir",
        str(tmp_path / "certs"),
        "--http-port",
        str(http_port),
        "--stun-port",
        str(stun_port),
        "--print-derpmap",
    ]
    async with derper(args) as process:
        await wait_for_tcp(port)
        assert process.stdout is not None
        derpmap = json.loads(await within(process.stdout.read(4096)))
        node = derpmap["Regions"]["900"]["Nodes"][0]
        assert (node["HostName"], node["DERPPort"], node["STUNPort"]) == ("derp.test", port, stun_port)

        url = f"https://127.0.0.1:{port}/derp"
        a = await DerpClient.connect(url, ssl=pki.client_context())
        b = await DerpClient.connect(url, ssl=pki.client_context())
        try:
            await a.send(b.public_key, b"standalone")
            message = await within(b.recv())
            assert message == frames.ReceivedPacket(a.public_key, b"standalone")
        finally:
            await a.close()
            await b.close()
        first_identity = a.server_public_key

        async with aiohttp.ClientSession() as session:
            headers = {"X-Tailscale-Challenge": "abc"}
            async with session.get(f"http://127.0.0.1:{http_port}/generate_204", headers=headers) as r:
                assert r.status == 204
                assert r.headers["X-Tailscale-Response"] == "response abc"

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        try:
            loop = asyncio.get_running_loop()
            transaction_id = stun.new_transaction_id()
            await loop.sock_sendto(sock, stun.binding_request(transaction_id), ("127.0.0.1", stun_port))
            reply, _ = await within(loop.sock_recvfrom(sock, 2048))
            assert stun.parse_binding_response(reply) == (transaction_id, sock.getsockname())
        finally:
            sock.close()

    assert process.returncode == 0
    assert load_or_create_private_key(config).public() == first_identity
    # A restart keeps the identity.
    async with derper(["-a", f"127.0.0.1:{port}", "-c", str(config), "--no-stun"]):
        await wait_for_tcp(port)
        client = await DerpClient.connect(f"http://127.0.0.1:{port}/derp")
        assert client.server_public_key == first_identity
        await client.close()


async def test_standalone_mesh_via_flags(tmp_path: Path) -> None:
    psk = tmp_path / "mesh.psk"
    psk.write_text(os.urandom(32).hex() + "\n")
    ports = [free_port(), free_port()]
    urls = ",".join(f"http://127.0.0.1:{p}/derp" for p in ports)
    async with contextlib.AsyncExitStack() as stack:
        for index, port in enumerate(ports):
            args = ["-a", f"127.0.0.1:{port}", "-c", str(tmp_path / f"k{index}.json"), "--no-stun"]
            await stack.enter_async_context(derper([*args, "--mesh-with", urls, "--mesh-psk-file", str(psk)]))
        for port in ports:
            await wait_for_tcp(port)
        a = await DerpClient.connect(f"http://127.0.0.1:{ports[0]}/derp")
        b = await DerpClient.connect(f"http://127.0.0.1:{ports[1]}/derp")
        try:
            # Until the mesh learns about b, a's packets are dropped; keep sending within the bound.
            receive = asyncio.create_task(b.recv())
            async with asyncio.timeout(15):
                while not receive.done():
                    await a.send(b.public_key, b"via flags")
                    await asyncio.wait({receive}, timeout=0.2)
            assert receive.result() == frames.ReceivedPacket(a.public_key, b"via flags")
        finally:
            await a.close()
            await b.close()
