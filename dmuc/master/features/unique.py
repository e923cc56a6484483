"""Unique room names (XEP-0307) on the service JID, as Prosody's mod_muc_unique (which
mod_muc 0.12 depends on): the feature in the service's disco#info, and a lower-case random
name for an iq get of <unique/>."""

from __future__ import annotations

import secrets

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.hooks import Hooks
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas


def service_features(features: list[str]) -> None:
    features.append(xmlns.MUC_UNIQUE)


def handle_iq(stanza: Element, payload: Element, out: Outbox) -> bool | None:
    """A `service-iq` handler: <unique xmlns='...muc#unique'/> get."""
    if payload.uri != xmlns.MUC_UNIQUE or payload.name != "unique":
        return None
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return True
    reply = Element((xmlns.MUC_UNIQUE, "unique"))
    reply.addContent(secrets.token_hex(8))  # util.id.medium: 64 random bits
    out.send(stanzas.iq_result(stanza, reply))
    return True


def setup(hooks: Hooks) -> None:
    hooks.add("service-disco-features", service_features)
    hooks.add("service-iq", handle_iq)
