"""The XEP-0282 slave (sans-I/O): mirrors remote rooms for this server's users."""
