-- Who may read (docs/security.md): each API client with its scope and rate, and its API keys.
-- A key is fsk_<key_id>_<secret>; only HMAC-SHA256(pepper, secret) is stored (hex), never the secret.
-- Scope lists are comma-separated text; NULL means every group / every feature set. No foreign keys, as in
-- the rest of the schema: the migration copies tables side by side (fs-keys checks that a key's client exists).
CREATE TABLE IF NOT EXISTS api_clients (
    client_id         VARCHAR(64) PRIMARY KEY,
    display_name      TEXT NOT NULL,
    google_principal  VARCHAR(320) UNIQUE,  -- a Google identity's email or subject; NULL: keys only
    feature_groups    TEXT,                 -- e.g. 'velocity,risk'
    feature_sets      TEXT,                 -- e.g. 'credit_decision' (every version) or 'credit_decision:2'
    batch_max         INTEGER NOT NULL CHECK (batch_max >= 1),
    rate_per_s        NUMERIC(12, 3) NOT NULL CHECK (rate_per_s > 0),
    burst             INTEGER NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at       TIMESTAMPTZ,
    CHECK (burst >= batch_max)  -- a batch the limiter could never admit would be refused forever
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id       VARCHAR(32) PRIMARY KEY,
    client_id    VARCHAR(64) NOT NULL,  -- api_clients.client_id
    secret_hash  VARCHAR(64) NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    replaced_by  VARCHAR(32)            -- the key that replaced this one (fs-keys keys rotate)
);

CREATE INDEX IF NOT EXISTS api_keys_client ON api_keys (client_id);
