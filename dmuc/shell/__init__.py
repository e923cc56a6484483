"""The Twisted/wokkel shell: the XEP-0114 connection, the daemons and their twistd options.
Everything else in dmuc is sans-I/O."""
