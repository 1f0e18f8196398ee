"""mailbridge: monitoring alert mail in, MSPCentric OEM alert API calls out.

The pipeline is visible in the sub-packages, in the order a message meets them:
sources -> store (staging) -> parse -> classify -> decide -> store (outbox) -> deliver -> audit.
"""

__version__ = "0.1.0"
