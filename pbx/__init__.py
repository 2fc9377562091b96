"""The PBX application: configuration, routing, queues, call control, CLI and server."""
