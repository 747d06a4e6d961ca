-- CSV imports over HTTP (issue #17): `POST /v1/members/imports` stores the uploaded file here,
-- in chunks, with a `pending` import; an importer in any instance claims it (a lease, so a
-- crashed instance's import is taken up again from its last committed batch), records its
-- progress after each batch and the refused rows as the report. The file's chunks are deleted
-- once the import has ended (`src/members_import/job.rs`).
CREATE TABLE member_imports
(
    id          uuid PRIMARY KEY,
    status      text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    file_name   text,
    size_bytes  bigint      NOT NULL,
    -- Progress, as of the last committed batch.
    bytes_read  bigint      NOT NULL DEFAULT 0,
    rows_read   bigint      NOT NULL DEFAULT 0,
    created     bigint      NOT NULL DEFAULT 0,
    updated     bigint      NOT NULL DEFAULT 0,
    unchanged   bigint      NOT NULL DEFAULT 0,
    refused     bigint      NOT NULL DEFAULT 0,
    notes       bigint      NOT NULL DEFAULT 0,
    -- Why it failed (the file is not CSV, has no email column, ...), when it did.
    error       text,
    -- Claims so far; an import whose runs keep failing on the database is given up.
    attempts    integer     NOT NULL DEFAULT 0,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX member_imports_due ON member_imports (created_at) WHERE status IN ('pending', 'running');

CREATE TABLE member_import_chunks
(
    import_id uuid    NOT NULL REFERENCES member_imports (id) ON DELETE CASCADE,
    n         integer NOT NULL,
    data      bytea   NOT NULL,
    PRIMARY KEY (import_id, n)
);

-- The report: each refused row (or left-out field) with its line, field and reason.
CREATE TABLE member_import_refusals
(
    -- File order (batches are recorded in order, a batch's refusals sorted by line).
    n         bigint GENERATED ALWAYS AS IDENTITY,
    import_id uuid   NOT NULL REFERENCES member_imports (id) ON DELETE CASCADE,
    line      bigint NOT NULL,
    email     text   NOT NULL,
    field     text   NOT NULL,
    reason    text   NOT NULL
);
CREATE INDEX member_import_refusals_in_order ON member_import_refusals (import_id, n);
