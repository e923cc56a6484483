-- mod_dmuc_slave: the Prosody side of a dmuc (XEP-0282) slave.
--
-- Load it on every VirtualHost whose users a dmuc slave serves, and name the slave's
-- XEP-0114 component (on this same Prosody) in the host's config:
--
--   VirtualHost "vesa.yeggmaex.irc"
--       modules_enabled = { "dmuc_slave" }
--       dmuc_slave_component = "dmuc.vesa.yeggmaex.irc"
--
--   Component "dmuc.vesa.yeggmaex.irc"
--       component_secret = "..."
--       validate_from_addresses = false  -- the slave speaks as the room to local users
--
-- At every connect the slave component tells this module which MUC services it mirrors:
--
--   <iq type='set' from='dmuc.vesa.yeggmaex.irc' to='vesa.yeggmaex.irc' id='...'>
--     <mirror xmlns='urn:xmpp:tmp:dmuc:0'><service jid='channel.avalon.irc'/></mirror>
--   </iq>
--
-- From then on every stanza a local client sends to a JID with a node part on a mirrored
-- service (a room or an occupant) is handed, unchanged (the user's full JID as 'from'), to the
-- slave component instead of being routed over s2s to the master. Stanzas to the service
-- domain itself are routed normally. If the component is not connected, mod_component
-- answers the user with an error from the room JID ("Component unavailable").
--
-- The mirror list is stored (module storage "dmuc_mirror") so that after a restart of this
-- Prosody its users' room traffic goes to the slave from the first stanza, not around it
-- to the master while the slave reconnects; the slave re-sends it on every connect.
--
-- A stanza of a local user that Prosody could not deliver to a mirrored room (the link to
-- the master's server is down: remote-server-not-found / remote-server-timeout) bounces
-- back to the user. Such bounces go to the slave instead: it learns of the netsplit at
-- once, submits again what was in flight, and passes on to the user only the errors of
-- what it will not submit again.

local jid_split = require "util.jid".split;
local jid_prepped_split = require "util.jid".prepped_split;
local st = require "util.stanza";
local new_id = require "util.id".medium;
local now = require "util.time".now; -- seconds, with a fraction (os.time() is whole seconds)
local core_post_stanza = prosody.core_post_stanza;

local xmlns_dmuc = "urn:xmpp:tmp:dmuc:0";

-- Message id prefixes of the wire format (docs/protocol.md §4.11.2), as in
-- dmuc/protocol/xep0282.py: a groupchat message handed to the slave again after it was
-- away (RESUBMIT_ID_PREFIX), and the id given to one a client sent without any
-- (SLAVE_ID_PREFIX).
local resent_id_prefix = "dmuc-resent-";
local given_id_prefix = "dmuc-id-";

-- The shared lib (dmuc_hold.lib.lua, in the same plugin directory): the hold queue, and
-- the one "when said" marker of dmuc's wire (docs/protocol.md §4.11.2).
local hold_lib = module:require("dmuc_hold");

-- When this server received a local user's groupchat message for a mirrored room,
-- carried to the slave in <x xmlns='urn:xmpp:tmp:dmuc:0'><said stamp='...'/></x>: a
-- message that waits (here while the slave is down, in the slave's socket while it is
-- stopped, held through a netsplit) reaches the room with the time it was said, not the
-- time it was handed on. Any <said/> a client put in is removed first: only we say when.
local function stamp_said(stanza)
	hold_lib.strip_said(stanza);
	hold_lib.stamp_said(stanza, now());
end

-- Hook priorities: the fan-out before any stock handler of the host; the divert after
-- them all (see there); bounces before the stock handlers deliver them to the user.
local fanout_priority = 1000;
local divert_priority = -10;
local bounce_priority = 10;

local component = module:get_option_string("dmuc_slave_component");
if not component then
	module:log("error", "dmuc_slave_component is not set; nothing will be diverted");
	return;
end

-- One copy of a local broadcast with its recipient list (docs/protocol.md §4.15); false
-- makes the slave send one copy per recipient, as the spec's wording has it.
local fanout_enabled = module:get_option_boolean("dmuc_slave_fanout", true);

-- mirrored MUC service domain -> true
local store = module:open_store("dmuc_mirror");
local mirrored = {};
do
	local stored, err = store:get(nil);
	if stored then
		for _, host in ipairs(stored) do mirrored[host] = true; end
	elseif err then
		module:log("warn", "Could not read the stored mirror list: %s", tostring(err));
	end
end

-- Keep the mirror list across a reload of this module.
function module.save()
	return { mirrored = mirrored };
end

function module.restore(data)
	mirrored = data.mirrored or {};
end

-- The slave component sets the list of services it mirrors (it replaces the old list).
module:hook("iq-set/host/" .. xmlns_dmuc .. ":mirror", function(event)
	local origin, stanza = event.origin, event.stanza;
	if origin.type ~= "component" or origin.host ~= component then
		module:log("warn", "Refusing a mirror list from %s (a %s session), only %s may set it",
			stanza.attr.from or "?", origin.type or "?", component);
		origin.send(st.error_reply(stanza, "auth", "forbidden"));
		return true;
	end

	local services, names = {}, {};
	local mirror = stanza:get_child("mirror", xmlns_dmuc);
	for service in mirror:childtags("service") do
		local node, host, resource = jid_prepped_split(service.attr.jid);
		if not host or node or resource then
			origin.send(st.error_reply(stanza, "modify", "bad-request",
				"Not a service domain: " .. tostring(service.attr.jid)));
			return true;
		end
		if not services[host] then
			services[host] = true;
			names[#names + 1] = host;
		end
	end

	mirrored = services;
	module:log("info", "%s mirrors: %s", component,
		#names > 0 and table.concat(names, ", ") or "(nothing)");
	local ok, err = store:set(nil, names);
	if not ok then
		module:log("warn", "Could not store the mirror list: %s", tostring(err));
	end
	-- <fanout/>: this module delivers one copy of a broadcast to several local sessions
	-- <said/>: this module stamps its users' groupchat messages (and strips theirs)
	local reply = st.reply(stanza):tag("mirror", { xmlns = xmlns_dmuc }):tag("said"):up();
	if fanout_enabled then
		reply:tag("fanout");
	end
	origin.send(reply);
	return true;
end);

-- ONE copy of a room broadcast from the slave, addressed to this host, with the local
-- recipients' full JIDs in <fanout xmlns='urn:xmpp:tmp:dmuc:0'><to jid='...'/>...</fanout>:
-- the list is removed and the stanza delivered to each recipient as if the slave had sent
-- each copy itself (same origin, same routing, so errors still go back to the slave), one
-- parse for all of them. As mod_muc's route_to_occupant, the stanza object is reused with
-- only 'to' changed: each delivery serialises it before the next one.
local function is_fanout(tag)
	return tag.name == "fanout" and tag.attr.xmlns == xmlns_dmuc;
end

local function fan_out(event)
	local origin, stanza = event.origin, event.stanza;
	if origin.type ~= "component" or origin.host ~= component then return; end
	local list = stanza:get_child("fanout", xmlns_dmuc);
	if not list then return; end
	local recipients = {};
	for item in list:childtags("to") do
		local jid = item.attr.jid;
		local _, host, resource = jid_split(jid);
		if host == module.host and resource then
			recipients[#recipients + 1] = jid;
		else
			module:log("warn", "Ignoring a fan-out recipient that is not a session of %s: %s",
				module.host, tostring(jid));
		end
	end
	stanza:maptags(function(tag)
		if is_fanout(tag) then return nil; end
		return tag;
	end);
	for _, jid in ipairs(recipients) do
		stanza.attr.to = jid;
		core_post_stanza(origin, stanza);
	end
	return true;
end

module:hook("message/host", fan_out, fanout_priority);
module:hook("presence/host", fan_out, fanout_priority);

-- While the slave is not connected (restarting, killed), what its users send waits here
-- (at most `dmuc_slave_hold` stanzas for `dmuc_slave_hold_seconds`), and goes to it once
-- it is back, in order; past either bound the user gets mod_component's error as before.
-- The queue is dmuc_hold.lib.lua's, which mod_dmuc_hold uses for the master too.
local holding = hold_lib.new(module, component, {
	max = module:get_option_number("dmuc_slave_hold", 2000);
	seconds = module:get_option_number("dmuc_slave_hold_seconds", 60);
});

-- A slave killed (-9) loses what was in its socket buffers: the groupchat messages of the
-- last `dmuc_slave_replay_seconds` before it went away are handed to it again when it is
-- back, with the id prefix that lets the master drop those it had already (XEP-0282 as
-- dmuc implements it, docs/protocol.md §4.11.2).
local replay_seconds = module:get_option_number("dmuc_slave_replay_seconds", 2);
-- and at most this many of them (a bound on memory whatever the rate)
local replay_max_messages = 500;
local recent = {}; -- { origin, stanza, at } of groupchat handed to the slave, oldest first

local function remember(origin, stanza)
	if stanza.name ~= "message" or stanza.attr.type ~= "groupchat" or not stanza.attr.id then
		return;
	end
	local t = now();
	recent[#recent + 1] = { origin = origin, stanza = st.clone(stanza), at = t };
	local first = 1;
	while recent[first]
		and (t - recent[first].at > replay_seconds or #recent - first >= replay_max_messages) do
		first = first + 1;
	end
	if first > 1 then
		local kept = {};
		for i = first, #recent do kept[#kept + 1] = recent[i]; end
		recent = kept;
	end
end

-- As if the stanza had been addressed to the component: mod_component sends it on; if the
-- component is not connected it answers "Component unavailable", which we catch to hold it.
local function hand_over(target, origin, stanza)
	local watched, was_held = holding.watch(origin, stanza);
	target.events.fire_event(hold_lib.event_name(stanza), { origin = watched, stanza = stanza });
	if not was_held() then
		remember(origin, stanza);
	end
end

local function release_held()
	local target, replay, queue = prosody.hosts[component], recent, holding.take();
	recent = {};
	if #replay + #queue == 0 then return; end
	module:log("info", "Slave %s is (back) up: handing it %d recent messages again and %d "
		.. "held stanzas", component, #replay, #queue);
	for _, entry in ipairs(replay) do
		local stanza = entry.stanza;
		if stanza.attr.id:sub(1, #resent_id_prefix) ~= resent_id_prefix then
			stanza.attr.id = resent_id_prefix .. stanza.attr.id;
		end
		hand_over(target, entry.origin, stanza);
	end
	for _, entry in ipairs(queue) do
		-- also for a user gone meanwhile: its leave is among them and must reach the room
		hand_over(target, entry.origin, entry.stanza);
	end
end

-- The component's host may be activated after this VirtualHost: watch for it.
local watching = false;
local function watch_component()
	local target = prosody.hosts[component];
	if watching or not target then return; end
	watching = true;
	module:hook_object_event(target.events, "component-authenticated", release_held);
end
watch_component();
module:hook_global("host-activated", function(host)
	if host == component then watch_component(); end
end);

-- Hand a local client's stanza for a room or occupant of a mirrored service to the slave.
local missing_logged = false; -- the component missing from this server: said once

local function divert(event)
	local origin, stanza = event.origin, event.stanza;
	if origin.type ~= "c2s" then return; end -- only what local clients send

	local to = stanza.attr.to; -- already prepped by the stanza router
	if not to then return; end
	local node, host, resource = jid_split(to);
	if not node or not mirrored[host] then return; end

	local target = prosody.hosts[component];
	if not target then
		if not missing_logged then
			module:log("error", "dmuc_slave_component %s is not a host of this server; "
				.. "routing mirrored rooms' traffic normally", component);
			missing_logged = true;
		end
		return;
	end

	if stanza.name == "message" and stanza.attr.type == "groupchat" and not stanza.attr.id then
		-- Only an id lets the message be handed over again after a crash of the slave, and
		-- the master drop it if it had it (docs/protocol.md §4.11.2). A tracking handle on
		-- the master/slave link only: users and the archive get the message without an id.
		stanza.attr.id = given_id_prefix .. new_id();
	end
	if stanza.name == "message" and stanza.attr.type == "groupchat" then
		stamp_said(stanza);
	end
	hand_over(target, origin, stanza);
	return true;
end

-- After every stock handler, so mod_presence has recorded the user's directed
-- presence to the room (and later sends the room the unavailable presence on disconnect,
-- which then comes through here too).
for _, name in ipairs({ "presence", "message", "iq" }) do
	module:hook("pre-" .. name .. "/bare", divert, divert_priority);
	module:hook("pre-" .. name .. "/full", divert, divert_priority);
end

-- A bounce of a local user's stanza to a mirrored room (from the room, generated by this
-- server's s2s when the master's server is unreachable) goes to the slave, which decides
-- what the user sees. Errors the slave itself sends (origin "component") pass.
local bounce_conditions = {
	["remote-server-not-found"] = true;
	["remote-server-timeout"] = true;
};

local function bounce_to_slave(event)
	local origin, stanza = event.origin, event.stanza;
	if stanza.attr.type ~= "error" or origin.type == "component" then return; end
	local from = stanza.attr.from;
	if not from then return; end
	local node, host = jid_split(from);
	if not node or not mirrored[host] then return; end
	local _, condition = stanza:get_error();
	if not bounce_conditions[condition] then return; end
	-- "Component unavailable" from our own slave is handled where it is sent (held);
	-- the master's component being down is a netsplit like any other.
	local err = stanza:get_child("error");
	if err and err.attr.by == component then
		return;
	end
	local target = prosody.hosts[component];
	if not target then return; end
	target.events.fire_event(stanza.name .. "/full", { origin = origin, stanza = stanza });
	return true;
end

for _, name in ipairs({ "presence", "message", "iq" }) do
	module:hook(name .. "/full", bounce_to_slave, bounce_priority);
end
