"""Example plugins shipped with dmuc, enabled with `muc.plugins` (docs/operations.md#plugins):
`dmuc.plugins.slowmode` and `dmuc.plugins.blocklist`. Each is one module with a
`setup(hooks, service)` that hooks the room events of dmuc.hooks, as a plugin of an
operator's own would."""
