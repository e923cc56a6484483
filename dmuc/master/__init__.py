"""The master daemon: the MUC service as an XEP-0114 component (``twistd dmuc-master``)."""
