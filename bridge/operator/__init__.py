"""The operator's side: views, status, metrics, the dashboard and web endpoints, the audit
trail, checks, reconcile, housekeeping and the systemd notifications. Reads the store through
its named methods; never part of the message path.
"""
