"""Credentials the edges present to their peers: OAuth2 client credentials and XOAUTH2, used
by the IMAP sources and by the SMTP and webhook targets alike (so neither stage owns it).
"""
