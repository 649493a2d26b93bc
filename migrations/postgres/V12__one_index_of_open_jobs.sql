-- SQLite's V12 puts its ready, retrying and running jobs in one index, so
-- that a claim's commit writes one index page to its WAL, not two.
-- PostgreSQL's WAL records each change, not the pages it touched (a page's
-- image only at its first change after a checkpoint), and its claim locks
-- rows through three FOR UPDATE SKIP LOCKED walks, each of its own index:
-- nothing changes here. The version exists so both backends keep the same
-- list.
SELECT 1;
