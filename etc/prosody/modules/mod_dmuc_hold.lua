-- mod_dmuc_hold: the master's Prosody holds what is sent to the dmuc master while it is
-- not connected (restarting, killed), and hands it over in order when it is back.
--
-- Load it on the master's Component (dmuc_hold.lib.lua in the same plugin directory):
--
--   Component "channel.avalon.irc"
--       component_secret = "..."
--       modules_enabled = { "dmuc_hold" }
--       -- dmuc_hold = 2000          -- stanzas held at most
--       -- dmuc_hold_seconds = 60    -- for at most this long
--
-- Without it, what the users reaching the master directly (on this server, or on a
-- server without a dmuc slave) say while the master is down bounces with mod_component's
-- "Component unavailable". With it, each stanza waits (at most `dmuc_hold` of them, for
-- at most `dmuc_hold_seconds`; past that the sender gets that error after all), marked
-- with when it was held (dmuc's one "when said" marker, <x xmlns='urn:xmpp:tmp:dmuc:0'>
-- <said stamp='...'/></x>, from dmuc_hold.lib.lua), so that the room gives a held
-- groupchat message the time it was said. A <said/> on anything else is removed (only
-- this module writes one here).
--
-- At every connect of the component this module says so first (a message from the
-- component's JID, <hold xmlns='urn:xmpp:tmp:dmuc:0'/>): only then does the master
-- believe such stamps (docs/protocol.md §4.11.5).

local st = require "util.stanza";
local hold_lib = module:require("dmuc_hold");

local xmlns_dmuc = "urn:xmpp:tmp:dmuc:0";
local intercept_priority = 10; -- before mod_component (-1) sends or bounces it

local holding = hold_lib.new(module, module.host, {
	max = module:get_option_number("dmuc_hold", 2000);
	seconds = module:get_option_number("dmuc_hold_seconds", 60);
	stamp = true;
});

local function intercept(event)
	if not event.dmuc_released then
		hold_lib.strip_said(event.stanza);
	end
	event.origin = holding.watch(event.origin, event.stanza);
end

for _, kind in ipairs({ "message", "presence", "iq" }) do
	for _, to in ipairs({ "bare", "full", "host" }) do
		module:hook(kind .. "/" .. to, intercept, intercept_priority);
	end
end

module:hook("component-authenticated", function()
	module:send(st.message({ from = module.host, to = module.host })
		:tag("hold", { xmlns = xmlns_dmuc }));
	local queue = holding.take();
	if #queue == 0 then return; end
	module:log("info", "Component %s is (back) up: handing it %d held stanzas", module.host,
		#queue);
	for _, entry in ipairs(queue) do
		module:fire_event(hold_lib.event_name(entry.stanza),
			{ origin = entry.origin, stanza = entry.stanza, dmuc_released = true });
	end
end, -10); -- after mod_component's own handlers: it sends from now on
