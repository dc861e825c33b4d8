-- usage is money: recording it must not depend on the chat or the answer still
-- existing. a chat deleted while its answer streams still bills what was
-- produced, and an event naming a deleted chat must never fail its batch.
-- the ids stay as plain references for reporting.
alter table usage_events drop constraint if exists usage_events_chat_id_fkey;
alter table usage_events drop constraint if exists usage_events_message_id_fkey;
