-- Change data capture: deletes and updates must carry the whole old row so that the change
-- stream names the user a deleted row belonged to (Debezium's "before" needs REPLICA IDENTITY FULL).
ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE transactions REPLICA IDENTITY FULL;
ALTER TABLE risk_scores REPLICA IDENTITY FULL;
ALTER TABLE installment_plans REPLICA IDENTITY FULL;
ALTER TABLE installments REPLICA IDENTITY FULL;
