"""twistd plugins: ``twistd dmuc-master`` and ``twistd dmuc-slave``."""

from twisted.application.service import ServiceMaker

dmuc_master = ServiceMaker(
    "dmuc-master",
    "dmuc.shell.master",
    "XEP-0282 distributed MUC master: a XEP-0045 room service as a Prosody component",
    "dmuc-master",
)

dmuc_slave = ServiceMaker(
    "dmuc-slave",
    "dmuc.shell.slave",
    "XEP-0282 distributed MUC slave: mirrors remote rooms for this server's users",
    "dmuc-slave",
)
