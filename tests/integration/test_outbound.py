"""RFC 5626 outbound: flows over TCP, keep-alives, and calls delivered on the flow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sip.message import Request
from tests.integration.db import wait_rows
from tests.integration.pbx_process import USERS, PbxProcess, run_pbx
from tests.integration.rawclient import RawClient
from tests.peers.sipp import SippRun, start_sipp

pytestmark = pytest.mark.integration

INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    with run_pbx(tmp_path_factory.mktemp("outbound"), "  auth_algorithms: [MD5, SHA-256]\n") as p:
        yield p


def test_outbound_registration_keepalive_and_call_on_the_same_connection(
    pbx: PbxProcess,
) -> None:
    ext, pw, _ = USERS["bob"]
    phone = RawClient(pbx.port, "tcp")
    try:
        resp = phone.register(ext, pw, contact_params=f";+sip.instance={INSTANCE};reg-id=1",
                              headers={"Supported": "outbound, path"})
        assert resp.status == 200
        assert "outbound" in resp.headers.get_all("Require")
        contact = resp.contacts[0]
        assert contact.params["+sip.instance"] == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        assert contact.params["reg-id"] == "1"
        row = wait_rows(pbx.database, "SELECT * FROM registrations WHERE aor = 'bob'")[0]
        assert row["reg_id"] == 1 and row["source"].startswith("tcp:127.0.0.1:")

        # RFC 5626 3.5.1: a CRLFCRLF ping on the flow gets a CRLF pong.
        phone.send_raw(b"\r\n\r\n")
        phone.recv(1.0)
        assert phone.pongs == 1

        # A call to bob arrives over the very connection bob registered on, even though
        # nothing listens at the Contact's port; bob answers busy on it.
        ext_a, pw_a, _ = USERS["alice"]

        async def call() -> None:
            caller = await start_sipp(SippRun(
                "uac_busy.xml", pbx.address, users=[(ext_a, pw_a)], service="102",
                keys={"domain": pbx.address}, timeout=10))
            invite = await asyncio.to_thread(phone.recv, 5.0)
            assert isinstance(invite, Request) and invite.method == "INVITE"
            phone.send_raw(bytes(invite.response(486, to_tag="bobtag")))
            ack = await asyncio.to_thread(phone.recv, 5.0)
            assert isinstance(ack, Request) and ack.method == "ACK"
            res = await caller.wait(10)
            assert res.ok, res.describe()

        asyncio.run(call())
    finally:
        phone.close()


def test_udp_crlf_keepalive_is_harmless(pbx: PbxProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\r\n\r\n", ("127.0.0.1", pbx.port))
    phone = RawClient(pbx.port, "udp")
    try:
        phone.send(phone.request("OPTIONS", "probe", expires=None))
        assert phone.final().status == 200
    finally:
        phone.close()
