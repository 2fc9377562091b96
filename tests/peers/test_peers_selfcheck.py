"""Self-checks of the test peers, run without the PBX.

Phones call each other directly, SIPp callers run against SIPp stand-ins for
the PBX (``sut_*.xml``), and phones call SIPp callees: every helper the PBX's
integration tests rely on is proven against a real, independent SIP stack.
"""

from __future__ import annotations

import re
import subprocess
from typing import Literal

import numpy as np
import pytest

from tests.peers.audio import ToneGenerator, dominant_frequency, rms, sine
from tests.peers.loops import on_all_loops, running_loop_name
from tests.peers.phone_driver import Phone, PhoneError
from tests.peers.pyvoip_phone import PyVoipPhone
from tests.peers.sipp import SippRun, registered_callee, run_sipp, start_sipp

REALM = "pbx.test"


def _sut_keys(user: str, password: str, **extra: str) -> dict[str, str]:
    # The stand-ins challenge like the PBX: two WWW-Authenticate headers.
    keys = {
        "realm": REALM, "auth_user": user, "auth_pass": password,
        "algo1": "MD5", "algo2": "SHA-256",
    }  # fmt: skip
    keys.update(extra)
    return keys


def _sipp_version() -> tuple[int, ...]:
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"SIPp v(\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    assert match, f"cannot read the SIPp version from {out.stdout!r}"
    return tuple(int(g or 0) for g in match.groups())


# -- audio helpers ---------------------------------------------------------------


@pytest.mark.parametrize("freq", [300.0, 440.0, 1000.0, 3000.0])
def test_dominant_frequency_finds_a_sine(freq: float) -> None:
    assert dominant_frequency(sine(freq, 0.5)) == pytest.approx(freq, abs=1.0)


def test_rms_of_a_sine_is_peak_over_root_two() -> None:
    assert rms(sine(1000.0, 1.0, amplitude=8000.0)) == pytest.approx(8000.0 / np.sqrt(2), rel=1e-3)
    assert rms(np.zeros(0)) == 0.0
    assert dominant_frequency(np.zeros(4000)) == 0.0


def test_tone_generator_is_phase_continuous() -> None:
    gen = ToneGenerator(1000.0)
    stitched = np.concatenate([gen.next(77) for _ in range(52)])
    assert np.abs(stitched.astype(np.int32) - sine(1000.0, stitched.size / 8000)).max() <= 1


# -- baresip phones, directly --------------------------------------------------------


@pytest.mark.integration
@on_all_loops
async def test_two_phones_hear_each_other_and_pass_dtmf() -> None:
    loop = running_loop_name()
    async with (
        Phone.start(name="alice", loop=loop) as alice,
        Phone.start(name="bob", loop=loop) as bob,
    ):
        await alice.tone(600)
        await bob.tone(1000)
        await alice.dial(bob.direct_uri())
        incoming = await bob.wait_for("incoming")
        assert incoming["from"].startswith("sip:alice@127.0.0.1")
        await alice.wait_for("ringing")
        await bob.answer()
        await alice.wait_for("established")
        await bob.wait_for("established")

        heard_by_bob = await bob.received_frequency(expect=600, timeout=5)
        heard_by_alice = await alice.received_frequency(expect=1000, timeout=5)
        assert abs(heard_by_bob - 600) <= 20
        assert abs(heard_by_alice - 1000) <= 20

        await alice.send_dtmf("123#")
        assert await bob.received_digits(4, timeout=5) == "123#"

        await alice.hangup()
        await alice.wait_for("closed")
        await bob.wait_for("closed")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_phones_call_over_tcp() -> None:
    async with Phone.start(name="carol") as carol, Phone.start(name="dave") as dave:
        await carol.tone(800)
        await carol.dial(dave.direct_uri("tcp"))
        await dave.wait_for("incoming")
        await dave.answer()
        await carol.wait_for("established")
        assert abs(await dave.received_frequency(expect=800) - 800) <= 20
        await dave.hangup()
        await carol.wait_for("closed")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_driver_reports_failures_with_context() -> None:
    async with Phone.start(name="erin") as erin:
        with pytest.raises(PhoneError, match="no call in progress"):
            await erin.answer()
        with pytest.raises(PhoneError, match=r"event 'established'.*within 0.3s") as info:
            await erin.wait_for("established", timeout=0.3)
        assert '"event": "ready"' in str(info.value)  # recent events are shown


# -- SIPp callers against SIPp stand-ins for the PBX -------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sipp_register_auth(sipp: str) -> None:
    async with await start_sipp(
        SippRun("sut_registrar.xml", keys=_sut_keys("alice", "s3cret"), timeout=10)
    ) as registrar:
        result = await run_sipp(
            SippRun(
                "register_auth.xml", f"127.0.0.1:{registrar.local_port}",
                users=[("alice", "s3cret")], keys={"domain": REALM, "expires": "60"},
                timeout=10,
            )
        )  # fmt: skip
        assert result.ok and result.successful == 1, result.describe()
        served = await registrar.wait(timeout=5)
    # SIPp answered the MD5 challenge, the first of the two.
    assert "algorithm=MD5" in served.logs and 'nonce="' in served.logs, served.describe()
    assert re.search(r'nonce="\d+n1x', served.logs), served.describe()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sipp_register_with_a_wrong_password_fails(sipp: str) -> None:
    async with await start_sipp(
        SippRun("sut_registrar.xml", keys=_sut_keys("alice", "s3cret"), timeout=10)
    ) as registrar:
        result = await run_sipp(
            SippRun(
                "register_auth.xml", f"127.0.0.1:{registrar.local_port}",
                users=[("alice", "wrong")], keys={"domain": REALM, "expires": "60"},
                timeout=3,
            )
        )  # fmt: skip
    assert not result.ok and result.failed == 1, result.describe()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sipp_takes_the_first_algorithm_of_two_challenges(sipp: str) -> None:
    """SIPp 3.6 reads all WWW-Authenticate headers as one value, first algorithm wins.

    With SHA-256 first it aborts (it has MD5 only before 3.7.3), so the PBX
    must put MD5 first, or offer MD5 alone, to users that SIPp plays.
    """
    keys = _sut_keys("alice", "s3cret", algo1="SHA-256", algo2="MD5")
    async with await start_sipp(SippRun("sut_registrar.xml", keys=keys, timeout=5)) as registrar:
        result = await run_sipp(
            SippRun(
                "register_auth.xml", f"127.0.0.1:{registrar.local_port}",
                users=[("alice", "s3cret")], keys={"domain": REALM, "expires": "60"},
                timeout=5,
            )
        )  # fmt: skip
    if _sipp_version() < (3, 7, 3):
        assert result.returncode == 255, result.describe()
        assert "authentication must use MD5" in result.errors, result.describe()
    else:
        assert result.ok, result.describe()


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [("uac_call_auth.xml", "answer"), ("uac_busy.xml", "busy"), ("uac_cancel.xml", "ring")],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_caller_scenarios(
    sipp: str, scenario: str, outcome: str, transport: Literal["udp", "tcp"]
) -> None:
    keys = _sut_keys("alice", "s3cret", outcome=outcome)
    async with await start_sipp(
        SippRun("sut_challenge.xml", keys=keys, timeout=15, transport=transport)
    ) as sut:
        caller = await run_sipp(
            SippRun(
                scenario, f"127.0.0.1:{sut.local_port}", service="200", transport=transport,
                users=[("alice", "s3cret")], keys={"domain": REALM},
                duration_ms=300, timeout=15,
            )
        )  # fmt: skip
        callee = await sut.wait(timeout=10)
    assert caller.ok and caller.successful == 1, caller.describe()
    assert callee.ok and callee.successful == 1, callee.describe()
    # RFC 3261 17.1.1.3: the ACK for the 401 carries the first INVITE's branch.
    sent = caller.messages
    first_invite = re.search(r"INVITE sip:.*?\n.*?branch=(\S+)", sent)
    first_ack = re.search(r"ACK sip:.*?\n.*?branch=(\S+)", sent)
    assert first_invite and first_ack, caller.describe()
    assert first_ack.group(1) == first_invite.group(1)


# -- baresip phones against SIPp -------------------------------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_phone_sees_a_wrong_password_refused(sipp: str) -> None:
    async with (
        await start_sipp(
            SippRun("sut_registrar.xml", keys=_sut_keys("frank", "pw"), timeout=15)
        ) as registrar,
        Phone.start(name="frank") as frank,
    ):
        target = f"127.0.0.1:{registrar.local_port}"
        failed = await frank.try_register(target, "frank", "nope", domain=REALM, expires=60)
        assert failed["event"] == "register_failed" and failed["code"] == 403, frank.describe()
        await frank.quit(unregister=False)


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_phone_registers(sipp: str, transport: Literal["udp", "tcp"]) -> None:
    async with (
        await start_sipp(
            SippRun(
                "sut_registrar.xml", keys=_sut_keys("frank", "pw"), timeout=15, transport=transport
            )
        ) as registrar,
        Phone.start(name="frank") as frank,
    ):
        target = f"127.0.0.1:{registrar.local_port}"
        await frank.register(target, "frank", "pw", domain=REALM, expires=60, transport=transport)
        served = await registrar.wait(timeout=5)
        assert served.ok, served.describe()
        assert f"transport={transport}" in served.messages.lower(), served.describe()


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("scenario", "close_reason"),
    [("uas_answer.xml", None), ("uas_busy.xml", "486"), ("uas_ring_noanswer.xml", None)],
)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_phone_calls_sipp_callees(
    sipp: str, scenario: str, close_reason: str | None, transport: Literal["udp", "tcp"]
) -> None:
    suffix = "" if transport == "udp" else ";transport=tcp"
    async with (
        await start_sipp(SippRun(scenario, timeout=15, transport=transport)) as callee,
        Phone.start(name="gina") as gina,
    ):
        await gina.dial(f"sip:200@127.0.0.1:{callee.local_port}{suffix}")
        if scenario == "uas_answer.xml":
            await gina.wait_for("established")
            await gina.hangup()
        elif scenario == "uas_ring_noanswer.xml":
            await gina.wait_for("ringing")
            await gina.hangup()  # a CANCEL while ringing
        closed = await gina.wait_for("closed")
        if close_reason is not None:
            assert close_reason in closed["reason"], gina.describe()
        result = await callee.wait(timeout=10)
    assert result.ok and result.successful == 1, result.describe()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_registered_callee_serves_calls_on_its_registered_port(sipp: str) -> None:
    keys = _sut_keys("henry", "pw")
    async with await start_sipp(SippRun("sut_registrar.xml", keys=keys, timeout=15)) as registrar:
        target = f"127.0.0.1:{registrar.local_port}"
        async with (
            registered_callee(target, "henry", "pw", domain=REALM, timeout=15) as callee,
            Phone.start(name="ivy") as ivy,
        ):
            served = await registrar.wait(timeout=5)
            assert served.ok, served.describe()
            contact = re.search(r"Contact: <sip:henry@127\.0\.0\.1:(\d+)", served.messages)
            assert contact and int(contact.group(1)) == callee.local_port, served.describe()
            # What the PBX will do: call the registered contact.
            await ivy.dial(f"sip:henry@127.0.0.1:{callee.local_port}")
            await ivy.wait_for("established")
            await ivy.hangup()
            await ivy.wait_for("closed")
            result = await callee.wait(timeout=10)
            assert result.ok and result.successful == 1, result.describe()


# -- pyVoIP ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_pyvoip_phone_registers_and_quits_cleanly(sipp: str) -> None:
    # Two calls: the registration and pyVoIP's de-registration when it stops.
    keys = _sut_keys("kate", "pw")
    async with await start_sipp(
        SippRun("sut_registrar.xml", keys=keys, calls=2, timeout=20)
    ) as registrar:
        async with PyVoipPhone.start(f"127.0.0.1:{registrar.local_port}", "kate", "pw") as kate:
            assert kate.sip_port > 0
            await kate.register()
            assert await kate.quit() == 0
        served = await registrar.wait(timeout=10)
    assert served.ok and served.successful == 2, served.describe()
    # pyVoIP's RFC 2069 answer: no qop, and its own idea of the digest URI.
    assert 'uri="sip:127.0.0.1;transport=UDP"' in served.logs, served.describe()
    assert "qop=" not in served.logs.split("Authorization:", 1)[1].splitlines()[0]
