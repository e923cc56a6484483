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

local xmlns_dmuc = "urn:xmpp:tmp:dmuc:0";

local component = module:get_option_string("dmuc_slave_component");
if not component then
	module:log("error", "dmuc_slave_component is not set; nothing will be diverted");
	return;
end

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
	origin.send(st.reply(stanza));
	return true;
end);

-- Hand a local client's stanza for a room or occupant of a mirrored service to the slave.
local missing_logged = false;

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

	-- As if the stanza had been addressed to the component: mod_component sends it on, or
	-- bounces an error to the user while the component is not connected.
	target.events.fire_event(stanza.name .. (resource and "/full" or "/bare"),
		{ origin = origin, stanza = stanza });
	return true;
end

-- Priority -10: after every stock handler, so mod_presence has recorded the user's directed
-- presence to the room (and later sends the room the unavailable presence on disconnect,
-- which then comes through here too).
for _, name in ipairs({ "presence", "message", "iq" }) do
	module:hook("pre-" .. name .. "/bare", divert, -10);
	module:hook("pre-" .. name .. "/full", divert, -10);
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
	-- "Component unavailable" (the slave itself is down) is for the user to see.
	local err = stanza:get_child("error");
	if err and (err.attr.by == component
			or err:get_child("not-connected", "xmpp:prosody.im/protocol/component")) then
		return;
	end
	local target = prosody.hosts[component];
	if not target then return; end
	target.events.fire_event(stanza.name .. "/full", { origin = origin, stanza = stanza });
	return true;
end

for _, name in ipairs({ "presence", "message", "iq" }) do
	module:hook(name .. "/full", bounce_to_slave, 10);
end
