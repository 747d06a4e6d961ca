-- Wake-ups are sent after the inserting transaction has committed (`db::notify`), no longer by
-- triggers inside it. PostgreSQL serialises the commits of notifying transactions (they hold a
-- database-wide lock through their commit's WAL flush), so a NOTIFY in every append capped
-- appends at a few thousand per second whatever the number of clients, and kept them from
-- sharing WAL flushes. A wake-up lost to a crash between commit and notify is covered by the
-- listeners' poll.
DROP TRIGGER events_appended ON events;
DROP FUNCTION notify_events_appended();
DROP TRIGGER stripe_event_received ON stripe_events;
DROP FUNCTION notify_stripe_event_received();
