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
--
-- When this Prosody stops (SIGTERM, a restart), and before it closes its c2s and s2s
-- sessions, the module (1) stops new s2s connections and closes each incoming s2s
-- stream as a stream ends, so that the other server sends what it had already written
-- and closes its side (Prosody would otherwise close them at once and drop what it had
-- not read); (2) tells the connected component (<stopping xmlns='urn:xmpp:tmp:dmuc:0'/>
-- from the component's JID) and waits for its answer (the same element, from and to the
-- component's JID): what the master wrote before its answer, its copies of what came in
-- at (1) too, is then routed on links that are still up, and the master keeps what it
-- has for users' sessions from then on and sends it when it is connected again. Each
-- step waits at most `dmuc_stop_wait` seconds (2 by default). Without this, what Prosody
-- read from the master once its s2s sessions were closing was dropped ("Communication
-- with remote domains is not enabled"), and what it had not read was lost with the socket.

local st = require "util.stanza";
local async = require "util.async";
local timer = require "util.timer";
local time_now = require "util.time".now;
local portmanager = require "core.portmanager";
local hold_lib = module:require("dmuc_hold");

local xmlns_dmuc = "urn:xmpp:tmp:dmuc:0";
local intercept_priority = 10; -- before mod_component (-1) sends or bounces it
local stop_wait = module:get_option_number("dmuc_stop_wait", 2);

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

-- Stopping: what other servers already sent comes in, and the master says everything it
-- had, before Prosody closes its links (mod_c2s and mod_s2s hook server-stopping at 0 and
-- -200 and close every session at once, dropping what they had not read yet).

local component_session; -- the connected component's, if any
local answered = false;

module:hook("component-authenticated", function(event)
	component_session = event.session;
end);

module:hook("component-disconnected", function()
	component_session = nil;
end);

module:hook("message/host", function(event)
	local stanza = event.stanza;
	if stanza.attr.from ~= module.host or stanza.attr.type == "error"
			or not stanza:get_child("stopping", xmlns_dmuc) then
		return;
	end
	answered = true;
	return true;
end, intercept_priority + 10);

-- Wait (in Prosody's main thread, which runs server-stopping) until done_yet() or for
-- at most `seconds`; whether done_yet() holds.
local function wait_until(done_yet, seconds)
	local in_thread, wait, done = pcall(async.waiter, 1, true);
	if not in_thread then return done_yet(); end -- not in the main thread: cannot wait
	local deadline = time_now() + seconds;
	timer.add_task(0, function()
		if done_yet() or time_now() >= deadline then done(); return; end
		return 0.01;
	end);
	wait();
	return done_yet();
end

local function incoming_s2s_open()
	for session in pairs(prosody.incoming_s2s) do
		if session.type == "s2sin" then return true; end
	end
	return false;
end

module:hook_global("server-stopping", function()
	if not component_session then return; end
	local started = time_now();
	-- No new s2s connections (their senders are told at once), and each incoming one
	-- closed as a stream ends: the other server sends what it had, then closes its side.
	portmanager.deactivate("s2s");
	portmanager.deactivate("s2s_direct_tls");
	for session in pairs(prosody.incoming_s2s) do
		if session.type == "s2sin" and session.conn then session:close(); end
	end
	local drained = wait_until(function() return not incoming_s2s_open(); end, stop_wait);
	-- The master answers behind everything it wrote before (what came in, too).
	answered = false;
	if component_session then -- written to it, not routed (the answer is routed)
		component_session.send(st.message({ from = module.host, to = module.host })
			:tag("stopping", { xmlns = xmlns_dmuc }));
	end
	local said = wait_until(function() return answered or not component_session; end,
		stop_wait);
	if drained and said then
		module:log("info", "Component %s has said everything it had, %.0f ms after the stop",
			module.host, (time_now() - started) * 1000);
	else
		module:log("warn", "Component %s: %s within %g s; stopping anyway", module.host,
			drained and "no answer to the stop" or "incoming s2s streams still open",
			stop_wait);
	end
end, 1000); -- before mod_c2s and mod_s2s close their sessions (0, -200)
