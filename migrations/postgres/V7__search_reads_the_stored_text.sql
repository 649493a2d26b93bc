-- The search index: a GIN index over each source's tsvector (the text
-- itself is in research_sources.body, kept once).
CREATE INDEX research_sources_search ON research_sources USING gin (search);
-- Search within one tenant without reading other tenants' rows.
CREATE INDEX research_sources_tenant ON research_sources (tenant_id);
