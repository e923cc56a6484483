-- Prosody on a users' server: attach dmuc-slave and divert local users' room traffic to it.
-- Put this in /etc/prosody/conf.d/dmuc-slave.cfg.lua, copy modules/mod_dmuc_slave.lua and
-- modules/dmuc_hold.lib.lua (both) into a plugin path (or point plugin_paths at them) and
-- reload Prosody.
-- The secret must equal component.secret in /etc/dmuc/dmuc-slave.toml.

plugin_paths = { "/usr/share/dmuc/prosody-modules" }

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "vesa.yeggmaex.irc"
    modules_enabled = { "dmuc_slave" }
    -- the slave component that mirrors rooms for this host's users
    dmuc_slave_component = "dmuc.vesa.yeggmaex.irc"
    -- one copy of a room broadcast for all local recipients, fanned out here (default)
    -- dmuc_slave_fanout = true

Component "dmuc.vesa.yeggmaex.irc"
    component_secret = "change-me"
    -- the slave delivers room stanzas to local users as the (remote) room itself
    validate_from_addresses = false
