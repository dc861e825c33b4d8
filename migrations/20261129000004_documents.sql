-- documents and retrieval (docs/RAG.md). documents keep their extracted text so
-- ingestion can be re-run (re-index, resume after a restart) without the upload.

alter table documents drop constraint documents_status_check;
alter table documents add constraint documents_status_check
    check (status in ('pending', 'indexing', 'ready', 'failed'));
alter table documents
    add column title        text not null default '',
    add column body         text not null default '',
    add column error        text,
    add column chunk_count  integer not null default 0 check (chunk_count >= 0),
    -- chunks embedded so far in the current run: progress = chunks_done / chunk_count.
    add column chunks_done  integer not null default 0 check (chunks_done >= 0),
    add column tokens       bigint not null default 0 check (tokens >= 0),
    add column cost_micros  bigint not null default 0 check (cost_micros >= 0),
    -- an id from another store (a pinecone vector id): imports key on it.
    add column external_id  text,
    add column updated_at   timestamptz not null default now();
create unique index documents_external_idx on documents (workspace_id, external_id)
    where external_id is not null;
-- the start-up sweep looks for unfinished ingestion.
create index documents_unfinished_idx on documents (status) where status in ('pending', 'indexing');

-- the workspace is copied onto each chunk so a filtered search is one index scan
-- (hnsw.iterative_scan) without a join; it never changes for a document.
alter table document_chunks
    add column workspace_id  uuid references workspaces (id) on delete cascade,
    add column start_offset  integer not null default 0 check (start_offset >= 0),
    add column end_offset    integer not null default 0 check (end_offset >= start_offset),
    add column heading       text,
    add column tokens        integer not null default 0 check (tokens >= 0);
update document_chunks c set workspace_id = d.workspace_id from documents d where d.id = c.document_id;
alter table document_chunks alter column workspace_id set not null;
create index document_chunks_workspace_idx on document_chunks (workspace_id);

-- an answer's sources: [{document_id, title, chunk, start, end, score}].
alter table messages add column citations jsonb;
