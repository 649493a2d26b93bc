-- Tenants become explicit, and a run remembers which inbox claim recorded it.

-- Every tenant a home knows. `--tenant`, inbox tenant folders and bundles
-- may only name these; an unknown or nil UUID is refused instead of silently
-- starting an invisible tenant.
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY
               CHECK (length(id) = 36 AND id <> '00000000-0000-0000-0000-000000000000'),
    name       TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at TEXT NOT NULL
) WITHOUT ROWID;

-- The home's default tenant, named "default".
INSERT INTO tenants (id, name, created_at)
SELECT value, 'default', strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'
FROM bundleq_meta WHERE key = 'default_tenant';

-- Tenants that homes of earlier versions created implicitly keep working,
-- named by their id.
INSERT OR IGNORE INTO tenants (id, name, created_at)
SELECT tenant_id, tenant_id, strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'
FROM (SELECT tenant_id FROM research_runs UNION SELECT tenant_id FROM research_jobs)
WHERE tenant_id <> '00000000-0000-0000-0000-000000000000';

-- The inbox claim (a batch folder under claims/) that recorded the run. A
-- claim recovered after a crash finds its own run here and is archived as
-- accepted; the same bytes dropped again are a duplicate.
ALTER TABLE research_runs ADD COLUMN inbox_claim TEXT;
