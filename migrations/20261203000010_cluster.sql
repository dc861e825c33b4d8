-- multi-node (docs/ARCHITECTURE.md, "Cluster").
-- which node accepted a user message or streams an answer: a survivor fails
-- only a dead node's streaming answers and re-queues only its stranded messages.
alter table messages add column node_id text;
-- the durable per-chat queue (issue 11): a user message acknowledged and not
-- yet answered. set when it is stored, cleared in the statement that opens
-- its answer (or ends it as failed). rows from before stay false.
alter table messages add column awaiting_answer boolean not null default false;
-- how many deltas a streaming answer's checkpointed text covers, so a client
-- joining it on another node knows which live deltas it still needs.
alter table messages add column deltas_saved integer;
-- the fencing token of the last answer opened in the chat: an answer is opened
-- only under a token at least this high, so a node whose lease lapsed cannot
-- open one after another node took the chat over.
alter table chats add column gen_fence bigint not null default 0;
create index messages_awaiting_idx on messages (chat_id, seq) where awaiting_answer;
create index messages_awaiting_node_idx on messages (node_id) where awaiting_answer;
create index messages_streaming_node_idx on messages (node_id) where status = 'streaming';
