-- The keyed audit chain: a row written under `audit_key` names the key that signed it
-- (its hash is then an HMAC-SHA256 under that key); rows without one keep their plain
-- SHA-256 link. Archive records are signed the same way.

ALTER TABLE policy_audit_logs ADD COLUMN key_id TEXT;
ALTER TABLE action_audit_logs ADD COLUMN key_id TEXT;
ALTER TABLE audit_archives ADD COLUMN key_id TEXT;
ALTER TABLE audit_archives ADD COLUMN mac TEXT;
