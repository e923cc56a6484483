"""The protocol vocabulary master and slave share: XEP-0045 and XEP-0282 stanzas and the
rules both sides apply to them."""
