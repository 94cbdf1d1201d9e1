-- Replication between the source of truth and a migration target (docs/migration.md) copies each row
-- with the updated_at it has: the touch triggers of 0004 must leave a row the replicator writes as it
-- arrives, or the two databases would differ by when each copy was made. The replicator's sessions
-- say who they are with application_name = 'fs_replicator'; every other writer is touched as before.
CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'fs_replicator' THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
