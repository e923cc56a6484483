"""The sans-I/O room core: XEP-0045 room state and behaviour, no reactor, no sockets."""
