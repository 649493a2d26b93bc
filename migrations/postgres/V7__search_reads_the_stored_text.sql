-- The search index: a GIN index over each source's tsvector. Snippets are
-- cut from research_sources.body (the indexed text, as the handler read it).
CREATE INDEX research_sources_search ON research_sources USING gin (search);
-- Search within one tenant without reading other tenants' rows.
CREATE INDEX research_sources_tenant ON research_sources (tenant_id);
