"""The SDP of anchored calls: what each phone is told (the relay's port on its side, the PBX's
address), latching the relay to what a phone answered, and G.711 conversion when the callee
chose a variant the caller did not offer. Mixed into :class:`pbx.calls.CallController`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from media.relay import Leg
from media.sdp import SdpError, SessionDescription, audio_endpoint, rewrite_for_anchor
from media.transcode import Transcoding, g711_formats, rename_format

from .callstate import Call, Side, leg_of, other_side

if TYPE_CHECKING:
    from .sipapp import SipApp

logger = logging.getLogger("pbx.calls")


class CallMedia:
    """SDP rewriting and relay latching for the call controller."""

    app: SipApp

    def _sdp_for(self, call: Call, side: Side, sd: SessionDescription) -> bytes:
        """``sd`` rewritten to send on leg ``side``: the relay's port for that leg, our address."""
        assert call.relay is not None
        if side == "a" and call.a_local is not None and call.a_local.state != "bridged":
            # RFC 3264 8: the caller's dialog may have had offers of its own meanwhile (hold
            # during ringback); the version only goes up.
            call.sdp_version["a"] = max(call.sdp_version["a"], call.a_local.sdp_version)
        call.sdp_version[side] += 1
        out = rewrite_for_anchor(
            sd, self.app.media_address, call.relay.port(leg_of(side)),
            call.sdp_ids[side], call.sdp_version[side],
        )
        return bytes(out)

    def _transcoding(self, call: Call, answer: bytes) -> tuple[str, str] | None:
        """If the callee chose a G.711 variant the caller did not offer, convert between them
        in the relay; returns the payload-type rename for the answer to the caller."""
        if call.relay is None or call.a_offer is None or call.a_offer.audio is None:
            return None
        try:
            b_audio = SessionDescription.parse(answer).audio
        except SdpError:
            return None
        a_formats = call.a_offer.audio.formats
        a_g711 = g711_formats(call.a_offer)
        if b_audio is None or not b_audio.formats or not a_g711:
            return None
        chosen = b_audio.formats[0]
        if chosen not in ("0", "8") or chosen in a_formats:
            return None
        mine = a_g711[0]
        call.relay.set_transcoding(Leg.A, Transcoding.between(int(mine), int(chosen)))
        call.relay.set_transcoding(Leg.B, Transcoding.between(int(chosen), int(mine)))
        call.caller_codec = mine
        logger.info("call %s: transcoding caller %s <-> callee %s", call.id, mine, chosen)
        return chosen, mine

    def _relay_answer(
        self, call: Call, from_side: Side, body: bytes, rename: tuple[str, str] | None = None
    ) -> bytes:
        """Latch the relay to the SDP ``from_side`` sent; return it rewritten for the other."""
        try:
            sd = SessionDescription.parse(body)
        except SdpError:
            return b""
        if sd.audio is None:
            # No usable audio stream at all (some phones answer a re-INVITE that races their
            # own call setup with an SDP that has no m=audio): passing it on would make the
            # other phone stop its audio, so keep offering this side's last good SDP.
            # A c=0.0.0.0 or a=sendonly hold still has its stream and passes through.
            prev = call.last_sdp.get(from_side)
            if prev is not None:
                logger.info("call %s: %s side sent SDP without audio; keeping its last one",
                            call.id, from_side)
                sd = prev
        else:
            call.last_sdp[from_side] = sd
        end = audio_endpoint(sd)
        if end is not None and call.relay is not None:
            call.relay.set_remote(leg_of(from_side), end)
        if rename is not None:
            sd = rename_format(sd, *rename)
        return self._sdp_for(call, other_side(from_side), sd)
