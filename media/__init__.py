"""The PBX's media engine: SDP, the RTP relay, the PBX's own media legs, DTMF, sources, recording.

- :mod:`media.sdp` parses and serialises SDP (RFC 8866), rewrites it so that each leg of a
  bridged call sends its audio to the PBX, and answers offers for legs the PBX terminates
  (RFC 3264 offer/answer).
- :mod:`media.relay` is the sans-I/O relay core: symmetric-RTP latching, forwarding decisions,
  counters, and the RTP port allocator; :mod:`media.udp` owns the relay's UDP sockets.
- :mod:`media.endpoint` (sans-I/O) and :mod:`media.local` (sockets) are a leg the PBX answers
  itself: jitter-buffered playout, G.711 decoding, and keys from :mod:`media.digits` (RFC 4733,
  SIP INFO and in-band detection merged into one event per key press).
- :mod:`media.playback` is the one 20 ms engine clock; :mod:`media.player` turns sources
  (:mod:`media.sources`, :mod:`media.tones`, :mod:`media.tts`) into one RTP stream per leg.
- :mod:`media.callrecording` and :mod:`media.recorder` make a call's stereo recording.

Only one audio stream per call is relayed; other streams (video, ...) are disabled in the
rewritten SDP.
"""

from __future__ import annotations

from media.relay import (
    Address,
    Leg,
    LegStats,
    NoPortsError,
    PortAllocator,
    RelaySession,
    RelayStats,
)
from media.sdp import (
    DIRECTIONS,
    Attribute,
    Connection,
    MediaSection,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SdpLine,
    SessionDescription,
    audio_endpoint,
    direction,
    rewrite_for_anchor,
)
from media.udp import RelayHandle, RtpRelay

__all__ = [
    "DIRECTIONS",
    "Address",
    "Attribute",
    "Connection",
    "Leg",
    "LegStats",
    "MediaSection",
    "NoPortsError",
    "Origin",
    "PortAllocator",
    "RelayHandle",
    "RelaySession",
    "RelayStats",
    "RtcpAttribute",
    "RtpMap",
    "RtpRelay",
    "SdpError",
    "SdpLine",
    "SessionDescription",
    "audio_endpoint",
    "direction",
    "rewrite_for_anchor",
]
