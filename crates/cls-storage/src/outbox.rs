//! The transactional outbox (SPEC §5.2): events are inserted in the transaction of the change
//! that causes them; the event-publisher relays them to Pub/Sub.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use cls_domain::event::Envelope;
use diesel::prelude::*;
use diesel::sql_types::{Array, Integer, Jsonb, Nullable, SmallInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StorageError;
use crate::prepared::{Binds, Sql, sql};
use crate::rows::Count;
use crate::schema::outbox;

/// An outbox row state written into the statement's text as a constant, never bound.
///
/// The outbox's partial indexes (`outbox_pending`, `outbox_published`, `outbox_dead`) are
/// defined by a state. A plan made for `state = $1` must hold for any state, so it cannot use
/// them; with the state as a constant every plan can. Statements that bind the state rely on
/// Postgres choosing a custom plan each time, which a cached generic plan (or an operator's
/// `plan_cache_mode = force_generic_plan`) does not give: the relay's read would then walk every
/// published row kept for the retention period. The type has a static query id, so diesel-async
/// still caches the statements that use it.
mod state {
    use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
    use diesel::pg::Pg;
    use diesel::query_builder::{AstPass, QueryFragment, QueryId};
    use diesel::sql_types::Text;

    macro_rules! states {
        ($($name:ident = $sql:literal,)*) => {$(
            #[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
            pub(super) struct $name;

            impl Expression for $name {
                type SqlType = Text;
            }

            impl<QS> AppearsOnTable<QS> for $name {}

            impl<QS> SelectableExpression<QS> for $name {}

            impl QueryFragment<Pg> for $name {
                fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
                    out.push_sql($sql);
                    Ok(())
                }
            }
        )*};
    }

    states! {
        Pending = "'pending'",
        Published = "'published'",
        Dead = "'dead'",
    }
}

/// The advisory lock class that serialises outbox writers per cluster ("CLSO").
const OUTBOX_LOCK_CLASS: i32 = 0x434c_534f;

/// An outbox row as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub seq: i64,
    pub id: Uuid,
    pub shard: i16,
    pub cluster_id: Uuid,
    pub ordering_key: String,
    pub topic: String,
    pub event_type: String,
    pub body: Value,
    pub attributes: Value,
    pub traceparent: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
}

/// Inserts events into the outbox. Call it in the transaction of the change that causes them,
/// so the events commit (or roll back) with the change.
///
/// An event whose id is already in the outbox is skipped, so a retried submission (the
/// publisher's gRPC `Publish`) writes each event once.
///
/// One statement: it first takes a transaction-scoped advisory lock per cluster (in id order,
/// so writers cannot deadlock), then inserts the rows, so writers for one cluster commit one
/// after another and `seq` order is commit order for each cluster.
#[tracing::instrument(
    name = "INSERT outbox",
    level = "info",
    skip_all,
    fields(otel.kind = "client", db.system = "postgresql", db.operation.name = "INSERT", db.collection.name = "outbox")
)]
pub async fn insert(
    conn: &mut AsyncPgConnection,
    envelopes: &[Envelope],
) -> Result<Written, StorageError> {
    if envelopes.is_empty() {
        return Ok(Written::default());
    }
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {} {} {AFTER_LOCKS} ON CONFLICT (id) DO NOTHING RETURNING shard",
            locks_cte(1),
            insert_sql(3)
        )
    });
    atomically!(conn, async |conn| {
        let statement = bind_locks(sql(STATEMENT.as_str()), envelopes);
        let inserted: Vec<InsertedShard> = bind_rows(statement, envelopes).load(conn).await?;
        Ok(Written::from_shards(
            inserted.into_iter().map(|row| row.shard),
        ))
    })
}

#[derive(diesel::QueryableByName)]
struct InsertedShard {
    #[diesel(sql_type = SmallInt)]
    shard: i16,
}

/// The outbox shards a write put events in: what a [`Waker`] (or [`wake`]) tells the relay once
/// the write has committed.
///
/// Every function that writes events returns one, and it must be used: an event committed
/// without a wake-up waits for the relay's next poll (`OUTBOX_POLL_INTERVAL`) instead of being
/// published within milliseconds.
#[must_use = "pass it to an outbox::Waker (or outbox::wake) once the write's transaction has committed"]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written(u64);

// A shard is a bit of `Written`.
const _: () = assert!(cls_domain::event::OUTBOX_SHARDS <= 64);

impl Written {
    /// The shards of `envelopes`, for a statement that inserts every one of them.
    pub fn of(envelopes: &[Envelope]) -> Written {
        Written::from_shards(envelopes.iter().map(|e| e.shard))
    }

    fn from_shards(shards: impl IntoIterator<Item = i16>) -> Written {
        Written(shards.into_iter().fold(0, |bits, shard| {
            // Shards come from `cls_domain::event::outbox_shard`, below OUTBOX_SHARDS; one out
            // of range would only wake the wrong worker, and the poll would still find it.
            bits | 1u64 << (shard.rem_euclid(64) as u32)
        }))
    }

    /// Both writes' shards, for a transaction that wrote events more than once.
    pub fn and(self, other: Written) -> Written {
        Written(self.0 | other.0)
    }

    /// Nothing was written (every event was already there, or there were none).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The shards, in ascending order.
    pub fn shards(self) -> impl Iterator<Item = i16> {
        (0..64i16).filter(move |shard| self.0 & (1 << shard) != 0)
    }

    /// The notification payload: the shards, comma-separated (see [`notified_shards`]).
    fn payload(self) -> String {
        let shards: Vec<String> = self.shards().map(|shard| shard.to_string()).collect();
        shards.join(",")
    }
}

/// Wakes the relay workers of the shards a committed write put events in (a `NOTIFY` on
/// [`NOTIFY_CHANNEL`]), after the write's transaction committed, on any connection outside a
/// transaction. Writers serving requests use a [`Waker`], which sends it on a connection of its
/// own.
///
/// The notification is a transaction of its own with `synchronous_commit` off, so it never
/// waits for a WAL flush. A transaction that notifies takes a database-wide lock from its
/// pre-commit until it ends, so when the events' own transaction notified (a trigger did until
/// 2026-12-06), every commit that wrote an event waited for the flushes of all the others:
/// with pgbench on one database, 2 500–3 800 outbox inserts/s with the notification in the
/// inserting transaction against 5 800–9 800 with it in one of its own after the commit
/// (16 clients, fsync on, two cores). The notification is only a hint; its transaction writes
/// nothing else, so losing it in a crash loses nothing: the relay's poll finds the events.
///
/// A failure is logged, not returned: the write has committed, and the poll will find it.
pub async fn wake(conn: &mut AsyncPgConnection, written: Written) {
    if written.is_empty() {
        return;
    }
    // Inside a transaction the notification goes out when it commits; turning off
    // `synchronous_commit` there would make the caller's own writes non-durable.
    let in_transaction = crate::in_transaction(conn);
    debug_assert!(
        !in_transaction,
        "outbox::wake is for after the events' transaction has committed"
    );
    let statement = if in_transaction {
        "SELECT pg_notify($1, $2)"
    } else {
        "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)"
    };
    let woken = sql(statement)
        .bind::<Text, _>(NOTIFY_CHANNEL)
        .bind::<Text, _>(written.payload())
        .execute(conn)
        .await;
    if let Err(error) = woken {
        tracing::warn!(
            %error,
            "cannot wake the event-publisher; it will find the committed events when it next polls"
        );
    }
}

/// Sends [`wake`]'s notifications off the writers' path, several writes' shards in one.
///
/// A writer calls [`Waker::wake`] once its transaction has committed; that only records the
/// shards and wakes the waker's task, which sends one notification for every shard recorded
/// since its last one, on a connection of its own. Under load the writes of many requests go
/// out in one notification, and no request waits for one: measured with the gateway's create
/// benchmark on 2026-12-06 (16 clients, two cores), a notification per create sent by the
/// request after its commit cost about 30 µs of the gateway's CPU and 70 µs of Postgres's
/// per create, about 15 % of the rate. A notification sent before the writer's commit could
/// wake a relay that does not yet see the events; this one is sent after it, so it cannot.
///
/// Like [`wake`] it is a hint: a notification lost (the database unreachable, the process
/// ending before its task ran) leaves the events to the relay's next poll.
#[derive(Debug, Clone)]
pub struct Waker {
    handle: Arc<WakerHandle>,
}

#[derive(Debug, Default)]
struct WakerShared {
    /// Shards recorded and not yet notified, as the bits of a [`Written`].
    pending: AtomicU64,
    /// Every handle dropped: the task sends what is pending and ends.
    closed: AtomicBool,
    ready: tokio::sync::Notify,
}

/// Closes the task when the last [`Waker`] clone is dropped.
#[derive(Debug)]
struct WakerHandle(Arc<WakerShared>);

impl Drop for WakerHandle {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.ready.notify_one();
    }
}

impl Waker {
    /// Spawns the task that sends the notifications, on the current Tokio runtime, with
    /// connections from `pool`; it ends when the last clone of the returned waker is dropped.
    pub fn spawn(pool: crate::PgPool) -> Waker {
        let shared = Arc::new(WakerShared::default());
        tokio::spawn(send_wakeups(shared.clone(), pool));
        Waker {
            handle: Arc::new(WakerHandle(shared)),
        }
    }

    /// Wakes the relay workers of the shards a committed write put events in; returns at once.
    pub fn wake(&self, written: Written) {
        if written.is_empty() {
            return;
        }
        let shared = &self.handle.0;
        shared.pending.fetch_or(written.0, Ordering::AcqRel);
        shared.ready.notify_one();
    }
}

async fn send_wakeups(shared: Arc<WakerShared>, pool: crate::PgPool) {
    loop {
        // `notify_one` stores a permit when the task is busy, so a wake recorded while a
        // notification is being sent is sent by the next round.
        shared.ready.notified().await;
        // (Called as an associated function: diesel's `RunQueryDsl::load` would shadow it.)
        let closed = AtomicBool::load(&shared.closed, Ordering::Acquire);
        let written = Written(shared.pending.swap(0, Ordering::AcqRel));
        if !written.is_empty() {
            match pool.get().await {
                Ok(mut conn) => wake(&mut conn, written).await,
                Err(error) => tracing::warn!(
                    %error,
                    "cannot wake the event-publisher; it will find the committed events when it next polls"
                ),
            }
        }
        if closed {
            return;
        }
    }
}

/// `locks AS (…)`: a CTE that takes the per-cluster advisory lock of every cluster the events
/// bound by [`bind_locks`] belong to (placeholders `$first` and `$first + 1`), in cluster id
/// order so that writers cannot deadlock. The events' insert ends with [`AFTER_LOCKS`], so the
/// locks are held before the first row's `seq` is drawn.
pub(crate) fn locks_cte(first: usize) -> String {
    format!(
        "locks AS (
             SELECT pg_advisory_xact_lock(${}, hashtext(cluster_id))
               FROM unnest(${}::text[]) AS cluster_id ORDER BY cluster_id
         )",
        first,
        first + 1
    )
}

/// The condition that makes an [`insert_sql`] wait for [`locks_cte`]: a sub-select is an init
/// plan, evaluated before the first row is produced.
pub(crate) const AFTER_LOCKS: &str = "WHERE (SELECT count(*) FROM locks) >= 0";

/// Binds the next two placeholders of `statement` for [`locks_cte`]: the lock class and the
/// events' distinct cluster ids.
pub(crate) fn bind_locks<B: Binds + Send>(
    statement: Sql<B>,
    envelopes: &[Envelope],
) -> Sql<impl Binds + Send + use<B>> {
    let mut cluster_ids: Vec<String> = envelopes
        .iter()
        .map(|e| e.resource.cluster_id().to_string())
        .collect();
    cluster_ids.sort_unstable();
    cluster_ids.dedup();
    statement
        .bind::<Integer, _>(OUTBOX_LOCK_CLASS)
        .bind::<Array<Text>, _>(cluster_ids)
}

/// The outbox columns an insert of events writes, and their SQL types, in placeholder order.
const INSERTED: [(&str, &str); 9] = [
    ("id", "uuid"),
    ("shard", "int2"),
    ("cluster_id", "uuid"),
    ("ordering_key", "text"),
    ("topic", "text"),
    ("event_type", "text"),
    ("body", "jsonb"),
    ("attributes", "jsonb"),
    ("traceparent", "text"),
];

/// `INSERT INTO outbox (…)` of [`INSERTED`]'s columns, and the list of their values: what
/// `value` writes for each (given its placeholder number, from `first`, and its SQL type).
fn insert_into(first: usize, value: impl Fn(usize, &str) -> String) -> (String, String) {
    let columns: Vec<&str> = INSERTED.iter().map(|(column, _)| *column).collect();
    let values: Vec<String> = INSERTED
        .iter()
        .enumerate()
        .map(|(i, (_, sql_type))| value(first + i, sql_type))
        .collect();
    (
        format!("INSERT INTO outbox ({})", columns.join(", ")),
        values.join(", "),
    )
}

/// An `INSERT INTO outbox … SELECT … FROM unnest(…)` of the events bound by [`bind_rows`],
/// whose nine placeholders are `$first` to `$first + 8`: for a statement that writes events
/// together with the change that causes them.
pub(crate) fn insert_sql(first: usize) -> String {
    let (insert, arrays) = insert_into(first, |n, sql_type| format!("${n}::{sql_type}[]"));
    format!("{insert} SELECT * FROM unnest({arrays})")
}

/// Binds the next nine placeholders of `statement` to `envelopes`, column by column, for
/// [`insert_sql`].
pub(crate) fn bind_rows<'a, B: Binds + Send + 'a>(
    statement: Sql<B>,
    envelopes: &'a [Envelope],
) -> Sql<impl Binds + Send + 'a> {
    fn column<'a, T>(envelopes: &'a [Envelope], f: impl Fn(&'a Envelope) -> T) -> Vec<T> {
        envelopes.iter().map(f).collect()
    }
    statement
        .bind::<Array<SqlUuid>, _>(column(envelopes, |e| e.id))
        .bind::<Array<SmallInt>, _>(column(envelopes, |e| e.shard))
        .bind::<Array<SqlUuid>, _>(column(envelopes, |e| e.resource.cluster_id()))
        .bind::<Array<Text>, _>(column(envelopes, |e| e.ordering_key.as_str()))
        .bind::<Array<Text>, _>(column(envelopes, |e| e.topic.as_str()))
        .bind::<Array<Text>, _>(column(envelopes, |e| e.event_type.as_str()))
        .bind::<Array<Jsonb>, _>(column(envelopes, |e| &e.body))
        .bind::<Array<Jsonb>, _>(column(envelopes, |e| crate::rows::encode(&e.attributes)))
        .bind::<Array<Nullable<Text>>, _>(column(envelopes, |e| e.traceparent.as_deref()))
}

/// Binds the next nine placeholders of `statement` to one event, as scalars, for the
/// single-event form of [`WithEvents`].
fn bind_row<'a, B: Binds + Send + 'a>(
    statement: Sql<B>,
    e: &'a Envelope,
) -> Sql<impl Binds + Send + 'a> {
    statement
        .bind::<SqlUuid, _>(e.id)
        .bind::<SmallInt, _>(e.shard)
        .bind::<SqlUuid, _>(e.resource.cluster_id())
        .bind::<Text, _>(e.ordering_key.as_str())
        .bind::<Text, _>(e.topic.as_str())
        .bind::<Text, _>(e.event_type.as_str())
        .bind::<Jsonb, _>(&e.body)
        .bind::<Jsonb, _>(crate::rows::encode(&e.attributes))
        .bind::<Nullable<Text>, _>(e.traceparent.as_deref())
}

/// A statement that writes a change together with its events, in two forms: for exactly one
/// event (the API's creates), its values bound as scalars, and for any number, bound as arrays
/// and unnested ([`insert_sql`]).
///
/// The single-event form is what every create runs. Its insert reads its one row from the
/// bound values directly, where the other sets up a function scan of nine arrays and receives
/// each array: counted with callgrind in a standalone backend (2026-12-07), about 100 000 of
/// the 1.25 million instructions of a cluster's create.
pub(crate) struct WithEvents {
    one: String,
    many: String,
}

impl WithEvents {
    /// The statement `text` writes around an insert of events whose nine placeholders start
    /// at `first`, in both forms.
    pub(crate) fn new(first: usize, text: impl Fn(&str) -> String) -> Self {
        let (insert, values) = insert_into(first, |n, sql_type| format!("${n}::{sql_type}"));
        WithEvents {
            one: text(&format!("{insert} SELECT {values}")),
            many: text(&insert_sql(first)),
        }
    }

    /// Runs the statement for `events`: `statement` binds the placeholders before the events'
    /// to the text it is given (one of the two forms), and the events are bound after them.
    pub(crate) async fn run<'a, B, F>(
        &'static self,
        conn: &mut AsyncPgConnection,
        events: &'a [Envelope],
        statement: F,
    ) -> QueryResult<usize>
    where
        F: FnOnce(&'static str) -> Sql<B>,
        B: Binds + Send + 'a,
    {
        match events {
            [event] => bind_row(statement(&self.one), event).execute(conn).await,
            _ => bind_rows(statement(&self.many), events).execute(conn).await,
        }
    }
}

/// Pending rows in `seq` order (oldest first), at most `limit`.
pub async fn pending(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(outbox::table
        .filter(outbox::state.eq(state::Pending))
        .order(outbox::seq.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)
        .await?)
}

// ---------------------------------------------------------------------------------------------
// The relay side (used by the event-publisher).

/// The advisory lock class of outbox shard leases ("CLSS"); the object id is the shard.
const SHARD_LOCK_CLASS: i32 = 0x434c_5353;

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Tries to lease `shard` for this session (a session-level advisory lock: released by
/// [`unlock_shard`] or when the connection closes, e.g. when the replica dies). Use a
/// dedicated connection, never a pooled one.
pub async fn try_lock_shard(
    conn: &mut AsyncPgConnection,
    shard: i16,
) -> Result<bool, StorageError> {
    shard_lock(conn, "SELECT pg_try_advisory_lock($1, $2) AS locked", shard).await
}

/// Gives up a shard lease held by this session; whether it was held.
pub async fn unlock_shard(conn: &mut AsyncPgConnection, shard: i16) -> Result<bool, StorageError> {
    shard_lock(conn, "SELECT pg_advisory_unlock($1, $2) AS locked", shard).await
}

async fn shard_lock(
    conn: &mut AsyncPgConnection,
    statement: &'static str,
    shard: i16,
) -> Result<bool, StorageError> {
    let row: Locked = sql(statement)
        .bind::<Integer, _>(SHARD_LOCK_CLASS)
        .bind::<Integer, _>(i32::from(shard))
        .get_result(conn)
        .await?;
    Ok(row.locked)
}

/// A pending row as the relay publishes it: only the columns it uses, with the body and the
/// attributes as the JSON text Postgres stores them as (its `jsonb` output), so the relay sends
/// the stored body as it is instead of decoding it into a JSON tree and encoding it again.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct PendingRow {
    pub id: Uuid,
    pub ordering_key: String,
    pub topic: String,
    /// The message body: a JSON object, as text.
    #[diesel(select_expression = outbox::body.cast::<Text>(), select_expression_type = diesel::dsl::Cast<outbox::body, Text>)]
    pub body: String,
    /// The message attributes: a JSON object of strings, as text.
    #[diesel(select_expression = outbox::attributes.cast::<Text>(), select_expression_type = diesel::dsl::Cast<outbox::attributes, Text>)]
    pub attributes: String,
    pub traceparent: Option<String>,
    /// When the row was written (its transaction's start).
    pub created_at: OffsetDateTime,
}

/// The oldest pending rows of one shard, in `seq` (per-cluster commit) order.
pub async fn pending_in_shard(
    conn: &mut AsyncPgConnection,
    shard: i16,
    limit: i64,
) -> Result<Vec<PendingRow>, StorageError> {
    pending_in_shard_except(conn, shard, &[], limit).await
}

/// Like [`pending_in_shard`], skipping the rows of the given ordering keys (keys whose
/// publishing is paused after a failure: their later rows must wait).
pub async fn pending_in_shard_except(
    conn: &mut AsyncPgConnection,
    shard: i16,
    paused_keys: &[&str],
    limit: i64,
) -> Result<Vec<PendingRow>, StorageError> {
    let mut query = outbox::table
        .filter(outbox::shard.eq(shard))
        .filter(outbox::state.eq(state::Pending))
        .order(outbox::seq.asc())
        .limit(limit)
        .select(PendingRow::as_select())
        .into_boxed();
    if !paused_keys.is_empty() {
        query = query.filter(outbox::ordering_key.ne_all(paused_keys));
    }
    Ok(query.load(conn).await?)
}

/// `state` is neither published nor dead: pending (the only other state the table allows),
/// for statements that find their rows by id.
///
/// Not `state = 'pending'`: that would let the planner reach the rows through the
/// `outbox_pending` index and check each pending row's id, and after an analyze that saw few
/// pending rows it estimates that as the cheaper plan. Then every mark during a backlog reads
/// the whole backlog: 45 ms for a batch of 800 among 50 000 pending rows (2026-12-08), and a
/// relay draining its second backlog of the benchmark at half the rate of its first.
type NotDone = diesel::dsl::And<
    diesel::dsl::NotEq<outbox::state, state::Published>,
    diesel::dsl::NotEq<outbox::state, state::Dead>,
>;

fn not_done() -> NotDone {
    outbox::state
        .ne(state::Published)
        .and(outbox::state.ne(state::Dead))
}

/// Marks pending rows published (after Pub/Sub acknowledged them); returns how many.
pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    now: OffsetDateTime,
) -> Result<usize, StorageError> {
    Ok(diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(not_done()),
    )
    .set((
        outbox::state.eq("published"),
        outbox::published_at.eq(crate::truncate_to_micros(now)),
    ))
    .execute(conn)
    .await?)
}

/// Records a failed publish attempt on the given rows (the relay passes each paused cluster's
/// oldest row); they stay pending and keep their place.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    error: &str,
) -> Result<(), StorageError> {
    diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(not_done()),
    )
    .set((
        outbox::attempts.eq(outbox::attempts + 1),
        outbox::last_error.eq(error),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a row Pub/Sub rejected as permanently invalid to the dead-letter state, with the
/// error; it is kept (never silently dropped) and no longer blocks its cluster's later events.
pub async fn dead_letter(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: &str,
) -> Result<bool, StorageError> {
    let updated = diesel::update(outbox::table.filter(outbox::id.eq(id)).filter(not_done()))
        .set((
            outbox::state.eq("dead"),
            outbox::attempts.eq(outbox::attempts + 1),
            outbox::last_error.eq(error),
        ))
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Deletes up to `batch` rows published before `before`; returns how many went.
pub async fn prune_published(
    conn: &mut AsyncPgConnection,
    before: OffsetDateTime,
    batch: i64,
) -> Result<usize, StorageError> {
    let old: Vec<i64> = outbox::table
        .filter(outbox::state.eq(state::Published))
        .filter(outbox::published_at.lt(before))
        .order(outbox::published_at.asc())
        .limit(batch)
        .select(outbox::seq)
        .load(conn)
        .await?;
    Ok(diesel::delete(
        outbox::table
            .filter(outbox::seq.eq_any(old))
            .filter(outbox::state.eq(state::Published)),
    )
    .execute(conn)
    .await?)
}

/// The backlog: how many rows are pending and when the oldest was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending: Option<OffsetDateTime>,
    pub dead: i64,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StorageError> {
    use diesel::dsl::{count_star, min};
    let (pending, oldest_pending): (i64, Option<OffsetDateTime>) = outbox::table
        .filter(outbox::state.eq(state::Pending))
        .select((count_star(), min(outbox::created_at)))
        .get_result(conn)
        .await?;
    let dead: i64 = outbox::table
        .filter(outbox::state.eq(state::Dead))
        .count()
        .get_result(conn)
        .await?;
    Ok(Backlog {
        pending,
        oldest_pending,
        dead,
    })
}

// ---------------------------------------------------------------------------------------------
// Publisher replicas and wake-ups.

/// The channel [`wake`] notifies; the payload lists the shards written to (comma-separated).
pub const NOTIFY_CHANNEL: &str = "cls_outbox";

/// The advisory lock class marking a live publisher replica ("CLSM"); the object id is the
/// backend pid, so each replica's lease connection holds exactly one.
const MEMBER_LOCK_CLASS: i32 = 0x434c_534d;

/// Registers this session as a live publisher replica until the connection closes.
pub async fn join_relay(conn: &mut AsyncPgConnection) -> Result<(), StorageError> {
    sql("SELECT pg_advisory_lock($1, pg_backend_pid())")
        .bind::<Integer, _>(MEMBER_LOCK_CLASS)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many publisher replicas are connected to this database now (sessions that called
/// [`join_relay`] and are still open).
pub async fn relay_replicas(conn: &mut AsyncPgConnection) -> Result<i64, StorageError> {
    let row: Count = sql("SELECT count(*) AS n FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objsubid = 2
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    .bind::<diesel::sql_types::BigInt, _>(i64::from(MEMBER_LOCK_CLASS))
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Subscribes this (dedicated) connection to outbox notifications.
pub async fn listen(conn: &mut AsyncPgConnection) -> Result<(), StorageError> {
    diesel::sql_query(format!("LISTEN {NOTIFY_CHANNEL}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The shards named by a notification payload; unknown text is ignored.
pub fn notified_shards(payload: &str) -> impl Iterator<Item = i16> + '_ {
    payload.split(',').filter_map(|s| s.trim().parse().ok())
}
