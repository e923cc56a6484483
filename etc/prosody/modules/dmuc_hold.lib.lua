-- dmuc_hold.lib.lua: the one hold queue of dmuc's Prosody modules (mod_dmuc_slave for a
-- users' server's slave, mod_dmuc_hold for the master): while an XEP-0114 component is
-- not connected, what is addressed to it waits here instead of bouncing, and is handed
-- to it in order once it is back. Loaded with module:require("dmuc_hold"); keep it in
-- the same plugin directory as the modules.
--
--   local holding = module:require("dmuc_hold").new(module, component, {
--       max = 2000, seconds = 60,  -- at most this many, for at most this long
--       stamp = true,               -- mark each held stanza with when it was held
--   });
--   fire_event(name, { origin = holding.watch(origin, stanza), stanza = stanza });
--   for _, entry in ipairs(holding.take()) do ... entry.origin, entry.stanza ... end
--
-- watch() wraps the sender's session: mod_component answers a stanza for a component
-- that is not connected with "Component unavailable" (remote-server-timeout and
-- <not-connected/>); that answer is caught and the stanza held instead. Past `max`
-- stanzas or `seconds`, the sender gets that answer after all (one log line each).
--
-- When a stanza was said, the one marker of dmuc's wire (docs/protocol.md §4.11.2):
-- <x xmlns='urn:xmpp:tmp:dmuc:0'><said stamp='...'/></x>, the time this Prosody received
-- it (XEP-0082 with milliseconds). stamp_said() puts it on (mod_dmuc_slave on every local
-- groupchat, mod_dmuc_hold on what it holds); strip_said() takes off any a sender wrote,
-- so that only these modules ever put one there. With `stamp`, a held stanza gets it.

local st = require "util.stanza";
local now = require "util.time".now; -- seconds, with a fraction (os.time() is whole seconds)
local os_date, floor = os.date, math.floor;
local jid_split = require "util.jid".split;

local xmlns_component = "xmpp:prosody.im/protocol/component";
local xmlns_dmuc = "urn:xmpp:tmp:dmuc:0";

-- XEP-0082 with milliseconds (util.datetime's os.date takes whole seconds only).
local function stamp_of(t)
	return os_date("!%Y-%m-%dT%H:%M:%S", floor(t)) .. (".%03dZ"):format(floor(t % 1 * 1000));
end

-- Any <said/> a sender put in (a client, or a server on the way) goes: only we say when.
local function strip_said(stanza)
	for x in stanza:childtags("x", xmlns_dmuc) do
		x:maptags(function(tag)
			if tag.name == "said" then return nil; end
			return tag;
		end);
	end
end

-- Marks `stanza` as said at `t` (seconds), unless it already is (a stanza held again
-- keeps its first time).
local function stamp_said(stanza, t)
	for x in stanza:childtags("x", xmlns_dmuc) do
		if x:get_child("said") then return; end
	end
	stanza:add_direct_child(st.stanza("x", { xmlns = xmlns_dmuc })
		:tag("said", { stamp = stamp_of(t) }):up());
end

local function is_not_connected(reply)
	local err = reply.attr.type == "error" and reply:get_child("error");
	return err and err:get_child("not-connected", xmlns_component) ~= nil;
end

-- The event a stanza fires on the host it is addressed to (e.g. "message/bare").
local function event_name(stanza)
	local node, _, resource = jid_split(stanza.attr.to);
	return stanza.name .. (resource and "/full" or node and "/bare" or "/host");
end

local function new(module, component, options)
	local hold_max, hold_seconds, stamp = options.max, options.seconds, options.stamp;
	local held = {}; -- { origin, stanza, at, reply }, oldest first
	local holding = {};

	local function give_up(entry, why)
		module:log("warn", "Component %s unavailable for %s; %s gets the error", component, why,
			entry.stanza.attr.from or "?");
		entry.origin.send(entry.reply);
	end

	-- Every held stanza gets the error once it waited hold_seconds; the timer then runs
	-- again when the oldest one left is due.
	local function expire_held()
		local t, kept = now(), {};
		for _, entry in ipairs(held) do
			if t - entry.at >= hold_seconds then
				give_up(entry, hold_seconds .. " s");
			else
				kept[#kept + 1] = entry;
			end
		end
		held = kept;
		return held[1] and hold_seconds - (t - held[1].at) or nil;
	end

	local function hold(origin, stanza, reply)
		if #held >= hold_max then
			give_up({ origin = origin, stanza = stanza, reply = reply }, "too long (queue full)");
			return;
		end
		if #held == 0 then
			module:log("info", "Component %s is not connected: holding what is sent to it",
				component);
			module:add_timer(hold_seconds, expire_held);
		end
		local t = now();
		if stamp then
			stamp_said(stanza, t);
		end
		held[#held + 1] = { origin = origin, stanza = stanza, at = t, reply = reply };
	end

	-- The sender's session as the component's host sees it: a "Component unavailable"
	-- answer to `stanza` holds it instead. held() says whether it was held.
	function holding.watch(origin, stanza)
		local was_held = false;
		local watched = setmetatable({
			send = function(reply)
				if is_not_connected(reply) and reply.attr.id == stanza.attr.id
					and reply.name == stanza.name then
					was_held = true;
					hold(origin, stanza, reply);
				else
					origin.send(reply);
				end
			end;
		}, { __index = origin });
		return watched, function() return was_held; end;
	end

	-- Everything held, oldest first; the queue starts again empty.
	function holding.take()
		local queue = held;
		held = {};
		return queue;
	end

	return holding;
end

return { new = new, event_name = event_name, stamp_said = stamp_said,
	strip_said = strip_said };
