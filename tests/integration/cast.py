"""The seed's dramatis personae (XEP-0282 §3.1), shared by the integration tests."""

from __future__ import annotations

MUC_DOMAIN = "channel.avalon.irc"

CAST = {
    "Wumpus": "argl@killrc.oulubox.irc/laptop",
    "Valdis": "valdis@killrc.oulubox.irc/desktop",
    "Phaedrus": "phaedrus@killrc.oulubox.irc/phone",
    "WiZ": "squit@eris.dclxvii.irc/jupiter",
    "Troy": "troy@eris.dclxvii.irc/screwdriver",
    "BigCheese": "rubenro@vesa.yeggmaex.irc/shaver",
    "Efchen": "msa@vesa.yeggmaex.irc/bicycle",
}

# A user of efnet.irc, the testbed's server without a slave (not in the seed).
DIRECT_USER = ("Ludwig", "ludwig@efnet.irc/vt100")


def bare(nick: str) -> str:
    return CAST[nick].split("/", 1)[0]


def room_jid(name: str) -> str:
    return f"{name}@{MUC_DOMAIN}"
