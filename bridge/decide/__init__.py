"""Decide: an alert and its context -> create / append / resolve, with storm control.

`core` is the pure decision (`decide()`), `stormgroup` the storm tickets it hands over to,
`decider` the one caller that reads the context and applies the live policy, `xmltx` the XML
transactions (read purely, then decided action by action through the decider).
"""
