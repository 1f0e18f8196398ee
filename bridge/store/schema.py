"""Numbered schema migrations. Append new ones; never edit a released one.

`PRAGMA user_version` holds the number of migrations applied. Each later issue adds its tables
or columns as a new entry, so parallel work does not clash on one CREATE statement.
"""

MIGRATIONS: list[str] = [
    # 1: the shape the whole pipeline needs from day one.
    """
    CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        source        TEXT NOT NULL,          -- imap:<name> | maildir:<name> | pipe
        source_uid    TEXT,                   -- <uidvalidity>:<uid> | maildir file | NULL
        arrived_at    REAL NOT NULL,          -- arrival at the mailbox (epoch s)
        staged_at     REAL NOT NULL,
        message_id    TEXT,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        raw           BLOB,                   -- NULL once pruned by retention
        state         TEXT NOT NULL DEFAULT 'staged',  -- staged|processing|pending|done
        outcome       TEXT,                   -- SPEC §3.8 outcome once done
        reason        TEXT,
        alert_key     TEXT,
        rule          TEXT,
        claimed_by    TEXT,
        claimed_at    REAL,
        updated_at    REAL NOT NULL
    );
    CREATE UNIQUE INDEX messages_source_identity ON messages(source, source_uid)
        WHERE source_uid IS NOT NULL;
    CREATE INDEX messages_mid_hash ON messages(message_id, sha256);
    CREATE INDEX messages_sha ON messages(sha256);
    CREATE INDEX messages_state ON messages(state);
    CREATE INDEX messages_outcome ON messages(outcome, updated_at);

    CREATE TABLE correlations (
        correlation_id TEXT PRIMARY KEY,      -- made by mailbridge, sent with the OPEN
        alert_key      TEXT NOT NULL,
        state          TEXT NOT NULL,         -- open|closed|void (create never made a ticket)
        account_id     TEXT,
        product_group  TEXT,
        alert_type     TEXT,
        title          TEXT,
        opened_at      REAL NOT NULL,         -- arrival time of the first occurrence
        last_seen_at   REAL NOT NULL,
        closed_at      REAL,
        occurrences    INTEGER NOT NULL DEFAULT 1,
        confirmed      INTEGER NOT NULL DEFAULT 0,  -- the PSA acknowledged the create
        previous_id    TEXT                   -- the ticket this one re-opens
    );
    CREATE UNIQUE INDEX correlations_one_open ON correlations(alert_key) WHERE state = 'open';
    CREATE INDEX correlations_key ON correlations(alert_key, opened_at);

    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        kind            TEXT NOT NULL,        -- psa|webhook|smtp
        ordering_key    TEXT NOT NULL,        -- alert key (psa, webhook) or message (smtp)
        message_ref     INTEGER REFERENCES messages(id),
        action          TEXT,                 -- OPEN|UPDATE|RESOLVED|forward|reply|admin
        correlation_id  TEXT,
        payload         TEXT NOT NULL,        -- JSON, without credentials
        state           TEXT NOT NULL DEFAULT 'pending',  -- pending|in_flight|done|dead
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        result          TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_key ON outbox(ordering_key, id);
    CREATE INDEX outbox_message ON outbox(message_ref);

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        kind        TEXT NOT NULL,            -- received|staged|classified|decided|queued|sent|...
        message_ref INTEGER,
        alert_key   TEXT,
        outcome     TEXT,
        detail      TEXT                      -- JSON, redacted
    );
    CREATE INDEX events_message ON events(message_ref);
    CREATE INDEX events_key ON events(alert_key);
    CREATE INDEX events_at ON events(at);

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT
    );
    """,
    # 2: messages the source did not download whole (over the size limit).
    """
    ALTER TABLE messages ADD COLUMN oversize INTEGER;
    """,
    # 3: storm control — coalesced occurrences on outbox rows, storm ticket membership.
    """
    ALTER TABLE outbox ADD COLUMN first_arrived_at REAL;
    ALTER TABLE outbox ADD COLUMN last_arrived_at REAL;
    ALTER TABLE outbox ADD COLUMN occurrences INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE storm_members (
        storm_id   TEXT NOT NULL,          -- correlationId of the storm ticket
        alert_key  TEXT NOT NULL,
        account_id TEXT,
        state      TEXT NOT NULL,          -- open | resolved
        joined_at  REAL NOT NULL,          -- arrival time of the alert that joined
        PRIMARY KEY (storm_id, alert_key)
    );
    CREATE INDEX storm_members_key ON storm_members(alert_key, state);
    CREATE INDEX storm_members_account ON storm_members(account_id, joined_at);
    CREATE INDEX correlations_account ON correlations(account_id, opened_at);
    """,
    # 4: raw bytes in a table of their own, written once and never updated: SQLite rewrites a
    # whole row on every UPDATE, so a 50 MB message in `messages` was copied at each state
    # change (claim, decision, outcome).
    """
    CREATE TABLE raw_messages (
        message_ref INTEGER PRIMARY KEY REFERENCES messages(id),
        raw         BLOB NOT NULL
    );
    INSERT INTO raw_messages (message_ref, raw) SELECT id, raw FROM messages WHERE raw IS NOT NULL;
    ALTER TABLE messages DROP COLUMN raw;
    """,
    # 5: partial indexes over unfinished outbox rows only, so claiming the head row of each
    # alert key never walks the delivered history of a busy key.
    """
    CREATE INDEX outbox_pending_due ON outbox(next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_unfinished_key ON outbox(ordering_key, kind, id)
        WHERE state IN ('pending', 'in_flight');
    """,
    # 6: claims have owners and poison caps. `owners` holds each process that claims work, with a
    # heartbeat lease; a claim is taken back only when its owner is gone. `claims` counts how
    # often a message was handed out without an outcome, `suspect` marks one taken back from a
    # claimant that died (handed out alone next), `crashes` counts deliverer crashes and deaths
    # of an outbox row (transient retries count in `attempts` only).
    """
    CREATE TABLE owners (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,           -- daemon | once
        pid          INTEGER NOT NULL,
        host         TEXT NOT NULL,
        boot_id      TEXT,                    -- the host's boot: a pid of an earlier boot is dead
        proc_start   TEXT,                    -- the process's start time, so a reused pid is not it
        started_at   REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    ALTER TABLE messages ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    CREATE INDEX outbox_in_flight ON outbox(claimed_by) WHERE state = 'in_flight';
    CREATE INDEX messages_suspect ON messages(arrived_at, id) WHERE suspect = 1;
    """,
    # 7: when a decision meant an outbox row to go, on the arrival clock: the arrival time, or
    # the end of its hold (group wait, minimum duration, coalescing window, resolve delay).
    # Kept apart from next_attempt_at, which processing time, retries and `--flush` move:
    # whether a recovery damps a held OPEN, or a storm takes it over, is judged on arrival time.
    # (No change of shape for it, but from here correlations.state may also be 'damped': a
    # problem that healed before its held OPEN went out; it never was a ticket.)
    # The product group of a storm member, for storms per account and product group.
    """
    ALTER TABLE outbox ADD COLUMN held_until REAL;
    ALTER TABLE storm_members ADD COLUMN product_group TEXT;
    """,
    # 8: a PSA row's payload is the core's neutral ticket call (`models.TicketCall`: alert_type,
    # account_id, product_group); only the PSA client renders MSPCentric's wire names. Rows
    # written before carried those names (alertType, accountId, productGroup): renamed here,
    # in every state, so a row queued before an upgrade is delivered, and the history reads
    # alike. title, summary and device keep their names.
    """
    UPDATE outbox SET payload = json_remove(json_set(payload,
            '$.alert_type', json_extract(payload, '$.alertType'),
            '$.account_id', json_extract(payload, '$.accountId'),
            '$.product_group', json_extract(payload, '$.productGroup')),
        '$.alertType', '$.accountId', '$.productGroup')
    WHERE kind = 'psa' AND json_valid(payload)
        AND json_type(payload, '$.alertType') IS NOT NULL;
    """,
    # 9 (issue 20): expected mail. One row per instance of an [[expect]] rule: its scope (the
    # alert key, the account, or "" for one per rule), when a report was last seen, and the
    # instant a missing one is declared. state 'missing' holds the open missing-mail ticket's
    # alert key until a report resolves it: one ticket per outage, not per missed window.
    """
    CREATE TABLE expectations (
        name          TEXT NOT NULL,
        scope         TEXT NOT NULL,
        account_id    TEXT NOT NULL,
        what          TEXT NOT NULL,
        last_seen_at  REAL,                   -- arrival of the last report (NULL: none yet)
        judge_at      REAL NOT NULL,          -- the next slot plus the grace
        state         TEXT NOT NULL DEFAULT 'watching',  -- watching|missing
        missing_since REAL,
        alert_key     TEXT,
        created_at    REAL NOT NULL,
        PRIMARY KEY (name, scope)
    );
    """,
    # 10: the administrator's answers to a dead row (issue 17). `outbox drop` moves a row to the
    # state 'dropped' (no change of shape: outbox.state may now also be 'dropped'); `outbox
    # ack` keeps it dead and listed but acknowledged: neither counts towards `degraded`.
    """
    ALTER TABLE outbox ADD COLUMN acknowledged_at REAL;
    """,
    # 11: indexes for the deciding path. New alert keys over all accounts in a window (the
    # storm logic's global cap) are counted on the arrival clock: without the first two the
    # count walked every correlation and storm member ever made, once per new alert in a
    # burst. A claim takes the oldest staged messages: without the third it walked and sorted
    # every staged message, once per batch (a backlog of n: n²/batch rows).
    """
    CREATE INDEX correlations_opened ON correlations(opened_at, alert_key);
    CREATE INDEX storm_members_joined ON storm_members(joined_at);
    CREATE INDEX messages_staged ON messages(arrived_at, id) WHERE state = 'staged';
    """,
    # 12: the oldest arrival among the messages not yet decided, which `run --once` reads at
    # every outbox claim (a row held on the arrival clock waits for it): by state alone the
    # index made that a walk over every staged and processing message — the whole backlog,
    # hundreds of times a drain. By (state, arrived_at) it is two index lookups; every query
    # by state alone uses it as before. And messages_mid_hash goes: no query has used it since
    # staging looks duplicates up by hash (messages_sha) and compares the Message-ID itself,
    # and its random keys cost every durable staging commit pages of its own. events_key
    # leaves out the events without an alert key (a third of them: `staged`, `outcome`), which
    # no look-up by key can find anyway: the events of a key's messages that carry none are
    # found through their message. messages_outcome likewise leaves out the messages without
    # an outcome yet: every query by outcome names one, and a message's claim and its
    # `pending` decision (each changes `updated_at`) no longer move its entry.
    """
    DROP INDEX IF EXISTS messages_state;
    CREATE INDEX messages_state ON messages(state, arrived_at);
    DROP INDEX IF EXISTS messages_mid_hash;
    DROP INDEX IF EXISTS events_key;
    CREATE INDEX events_key ON events(alert_key) WHERE alert_key IS NOT NULL;
    DROP INDEX IF EXISTS messages_outcome;
    CREATE INDEX messages_outcome ON messages(outcome, updated_at) WHERE outcome IS NOT NULL;
    """,
]
