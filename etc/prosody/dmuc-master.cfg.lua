-- Prosody: attach dmuc-master as the MUC service of this server.
-- Put this in /etc/prosody/conf.d/dmuc-master.cfg.lua, copy modules/mod_dmuc_hold.lua and
-- modules/dmuc_hold.lib.lua (both) into a plugin path (or point plugin_paths at them) and
-- reload Prosody.
-- The secret must equal component.secret in /etc/dmuc/dmuc-master.toml.

plugin_paths = { "/usr/share/dmuc/prosody-modules" }

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "channel.avalon.irc"
    component_secret = "change-me"
    -- While dmuc-master is down (restarting, crashed), what is sent to it waits here
    -- and reaches it, in order and with the time it was said, when it is back, instead
    -- of bouncing "Component unavailable" to the users who reach it directly.
    modules_enabled = { "dmuc_hold" }
    -- dmuc_hold = 2000          -- stanzas held at most
    -- dmuc_hold_seconds = 60    -- for at most this long; past either, the error
    -- dmuc_stop_wait = 2        -- s: when this Prosody stops, it first lets incoming s2s
                                 -- streams end and dmuc-master say all it had (each wait)
