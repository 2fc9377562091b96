"""The PBX's SIP stack: wire format, transactions, dialogs, digest auth and registrar logic.

It contains no application logic and imports nothing of the PBX. Everything except
:mod:`sip.transport` is sans-I/O: time is passed in as ``now``.
"""
