-- The offline export (shared/feature_store/services/etl.py) reads each table incrementally by a
-- modification time, page by page in (time, key) order. This migration gives it what it needs:
--   * installments had no modification time: updated_at, now() for existing rows and new ones;
--   * a trigger keeps updated_at current on every UPDATE of users, installment_plans and
--     installments, so that no writer can change a row without moving it past the watermark;
--   * (time, key) indexes where many rows share one time (a seed or a batch job writes thousands
--     with the same now()): each page is then an index range scan, not a scan of the ties.
-- CockroachDB: triggers need v24.3+ (docs/offline.md).

ALTER TABLE installments ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER installment_plans_touch_updated_at BEFORE UPDATE ON installment_plans
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER installments_touch_updated_at BEFORE UPDATE ON installments
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE INDEX idx_installments_updated_at ON installments (updated_at, plan_id, seq);
CREATE INDEX idx_plans_updated_at ON installment_plans (updated_at, plan_id);
CREATE INDEX idx_risk_scores_calculated_user ON risk_scores (calculated_at, user_id);
