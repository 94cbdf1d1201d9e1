-- Source-of-truth tables for the credit_decision feature set.
-- CockroachDB notes: docs/cockroachdb.md lists every statement here that needs a different form there.

CREATE TABLE users (
    user_id              VARCHAR(64) PRIMARY KEY,
    age                  INTEGER CHECK (age BETWEEN 0 AND 150),
    location_country     CHAR(2),
    signup_date          DATE NOT NULL,
    verification_status  VARCHAR(20) NOT NULL DEFAULT 'pending',
    income_bracket       VARCHAR(20),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_users_updated_at ON users (updated_at);

-- Partitioned by month of created_at; the migration runner creates the monthly partitions
-- (fs-migrate partitions) so there is always room for the next months.
CREATE TABLE transactions (
    transaction_id  VARCHAR(64) NOT NULL,
    user_id         VARCHAR(64) NOT NULL,
    amount          NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    currency        CHAR(3) NOT NULL DEFAULT 'USD',
    merchant        VARCHAR(100) NOT NULL,
    category        VARCHAR(50) NOT NULL,
    status          VARCHAR(20) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (transaction_id, created_at)
) PARTITION BY RANGE (created_at);
-- The hot per-user aggregation reads only this index (index-only scan), newest first.
CREATE INDEX idx_transactions_user_created
    ON transactions (user_id, created_at DESC) INCLUDE (amount, status, category, merchant);
CREATE INDEX idx_transactions_created_at ON transactions (created_at);

CREATE TABLE risk_scores (
    user_id             VARCHAR(64) PRIMARY KEY,
    risk_score          NUMERIC(5, 3) CHECK (risk_score BETWEEN 0 AND 1),
    fraud_probability   NUMERIC(5, 3) CHECK (fraud_probability BETWEEN 0 AND 1),
    payment_delays      INTEGER NOT NULL DEFAULT 0 CHECK (payment_delays >= 0),
    device_trust_score  NUMERIC(5, 3) CHECK (device_trust_score BETWEEN 0 AND 1),
    credit_utilization  NUMERIC(5, 3) CHECK (credit_utilization BETWEEN 0 AND 1),
    calculated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_risk_scores_calculated_at ON risk_scores (calculated_at);

-- A BNPL plan splits one purchase into installments (4 in the generator).
CREATE TABLE installment_plans (
    plan_id          VARCHAR(64) PRIMARY KEY,
    user_id          VARCHAR(64) NOT NULL,
    transaction_id   VARCHAR(64) NOT NULL,
    principal        NUMERIC(12, 2) NOT NULL CHECK (principal >= 0),
    n_installments   INTEGER NOT NULL DEFAULT 4 CHECK (n_installments > 0),
    status           VARCHAR(20) NOT NULL,  -- active | completed | defaulted
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_plans_user ON installment_plans (user_id) INCLUDE (status);

CREATE TABLE installments (
    plan_id     VARCHAR(64) NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq > 0),
    user_id     VARCHAR(64) NOT NULL,  -- denormalised from the plan: per-user reads skip a join
    due_date    DATE NOT NULL,
    amount      NUMERIC(12, 2) NOT NULL CHECK (amount >= 0),
    paid_at     TIMESTAMPTZ,
    PRIMARY KEY (plan_id, seq)
);
CREATE INDEX idx_installments_user ON installments (user_id) INCLUDE (due_date, amount, paid_at);
