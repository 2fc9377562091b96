"""Real SIP peers for the PBX's tests: scripted softphones and SIPp.

* :mod:`tests.peers.phone_driver` - :class:`~tests.peers.phone_driver.Phone`,
  a baresip-python softphone in its own process (register, dial, answer,
  tones, DTMF, received-audio analysis).
* :mod:`tests.peers.pyvoip_phone` - the same idea for pyVoIP (UDP only).
* :mod:`tests.peers.sipp` - run SIPp scenarios from ``tests/peers/scenarios``.
* :mod:`tests.peers.audio` - sine generation, RMS and dominant frequency.
* :mod:`tests.peers.ports` - free loopback ports.
* :mod:`tests.peers.loops` - running async tests on asyncio and uvloop.
* :mod:`tests.peers.eventsink` - the JSON-line event stream of the peer processes.
"""
