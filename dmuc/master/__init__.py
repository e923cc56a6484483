"""The master (sans-I/O): the XEP-0045 room service and the XEP-0282 routing through slaves."""
