"""Media for the PBX: SDP offer/answer handling and the RTP relay that anchors call audio.

- :mod:`media.sdp` parses and serialises SDP (RFC 8866) and rewrites it so that each leg of a
  bridged call sends its audio to the PBX (RFC 3264 offer/answer).
- :mod:`media.relay` is the sans-I/O relay core: symmetric-RTP latching, forwarding decisions,
  counters, and the RTP port allocator.
- :mod:`media.udp` is the asyncio adapter that owns the relay's UDP sockets.

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
