-- Prosody: attach dmuc-master as the MUC service of this server.
-- Put this in /etc/prosody/conf.d/dmuc-master.cfg.lua and reload Prosody.
-- The secret must equal component.secret in /etc/dmuc/dmuc-master.toml.

component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "channel.avalon.irc"
    component_secret = "change-me"
