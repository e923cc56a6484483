"""XML namespaces used by the service."""

MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
MUC_OWNER = "http://jabber.org/protocol/muc#owner"
MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
MUC_REGISTER = "http://jabber.org/protocol/muc#register"
MUC_REQUEST = "http://jabber.org/protocol/muc#request"
MUC_UNIQUE = "http://jabber.org/protocol/muc#unique"  # XEP-0307
MUC_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
MUC_SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DATA_FORMS = "jabber:x:data"
DATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"  # XEP-0122
COMMANDS = "http://jabber.org/protocol/commands"
REGISTER = "jabber:iq:register"
CONFERENCE = "jabber:x:conference"
DELAY = "urn:xmpp:delay"
PING = "urn:xmpp:ping"
STANZA_ID = "urn:xmpp:sid:0"
VCARD = "vcard-temp"
VCARD_UPDATE = "vcard-temp:x:update"  # XEP-0153
OCCUPANT_ID = "urn:xmpp:occupant-id:0"  # XEP-0421
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT = "jabber:client"
COMPONENT = "jabber:component:accept"
DMUC = "urn:xmpp:tmp:dmuc:0"
MAM = "urn:xmpp:mam:2"
MAM_EXTENDED = "urn:xmpp:mam:2#extended"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"
# XEP-0425 message moderation, as the clients of 2023-2025 speak it: v0.2 (fastened to the
# message) and v0.3+ (moderate:1 with message-retract:1)
FASTEN = "urn:xmpp:fasten:0"
MODERATE_0 = "urn:xmpp:message-moderate:0"
RETRACT_0 = "urn:xmpp:message-retract:0"
MODERATE_1 = "urn:xmpp:message-moderate:1"
RETRACT_1 = "urn:xmpp:message-retract:1"
# what decides whether a groupchat message is historic (mod_muc's muc-message-is-historic)
HINTS = "urn:xmpp:hints"  # XEP-0334 message processing hints
EME = "urn:xmpp:eme:0"  # XEP-0380 explicit message encryption
CHAT_MARKERS = "urn:xmpp:chat-markers:0"  # XEP-0333
