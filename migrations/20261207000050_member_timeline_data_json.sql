-- A timeline entry's `data` is kept as the `json` text the projection writes, not as `jsonb`:
-- it is only ever read whole (the API's timeline), never queried into, and converting each
-- entry into `jsonb` was most of PostgreSQL's work in a rebuild of `member_timeline`.
ALTER TABLE member_timeline ALTER COLUMN data TYPE json USING data::json;
