"""The master's room features, one concern a module, around the room core (as Prosody's
plugins/muc/*.lib.lua around muc.lib.lua)."""
