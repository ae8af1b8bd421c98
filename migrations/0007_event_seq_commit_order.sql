-- 0007_event_seq_commit_order.sql: order events become visible in seq order.
--
-- The finance feed (GET /v1/order-events) pages by seq: a reader passes the
-- last seq it saw and gets the events after it. That is only safe when no
-- event can commit below a seq a reader has already been handed. With a
-- plain bigserial it could: several order-consumer replicas (message path,
-- expiry sweeper, completion sweep) insert events in concurrent
-- transactions; one that took seq 10 may commit after one that took 11, and
-- a reader that saw 11 would pass next_after=11 and never see 10.
--
-- The rule: a row's seq is assigned by the trigger below and nowhere else
-- (the column has no default any more, and the trigger overrides any value
-- an INSERT brings). The trigger first takes the transaction-level advisory
-- lock 7263542100 (L), then calls nextval(). L is released only when the
-- transaction ends, so it is held from the transaction's first event insert
-- to its commit; the writers therefore insert their last events just
-- before they commit (order-consumer: the event, then the inbox outcome;
-- the sweeps: every event of the batch after all its other work), and
-- batching several events per transaction shares one hold of L.
--
-- Why that makes seq order the order in which events become visible: let
-- events a < b be written by transactions T1 and T2 (T1 <> T2). Both seqs
-- were drawn under L, and nextval() (CACHE 1: no per-session blocks of
-- values) hands out increasing values in call order, so T1 held L when it
-- drew a, before T2 held it to draw b. L is exclusive and held to the end of
-- the transaction, so T1 had ended before T2 got L. PostgreSQL releases a
-- transaction's locks only after its commit record is in the WAL and the
-- commit is visible to new snapshots (CommitTransaction: ProcArrayEndTransaction,
-- then the lock release). So when b exists at all, a is already committed
-- and visible, or was rolled back and never will be. A snapshot that sees b
-- was taken after T2 committed, hence it sees a: every snapshot sees a
-- prefix of the feed (all committed events up to its highest seq). A reader
-- that pages with one statement per page ("seq > cursor ORDER BY seq") thus
-- never receives b while a is still to come, and the cursor it is handed
-- never passes an event that commits later. A hot standby replays commit
-- records in WAL order, so a read replica gives the same guarantee.
--
-- seq stays increasing, not dense: a rolled-back insert, or one that ON
-- CONFLICT DO NOTHING drops, leaves a hole. Readers go by order, never by
-- counting.
--
-- Cost: event-writing transactions of all replicas serialise from their
-- event insert to their commit (about one commit's fsync each); the key is
-- any constant distinct from the migration runner's (tools/migrate.sh).
ALTER TABLE order_events ALTER COLUMN seq DROP DEFAULT;
ALTER SEQUENCE order_events_seq_seq CACHE 1;

CREATE FUNCTION order_events_take_seq() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7263542100);
    NEW.seq := nextval('order_events_seq_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER order_events_take_seq BEFORE INSERT ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_take_seq();
