//! The outbox's connections: straight to PostgreSQL, or through PgBouncer in transaction mode.
//!
//! Through PgBouncer (`queue.pgbouncer = true`) a server connection belongs to a client only
//! for one transaction. sqlx runs each statement as two exchanges (Parse + Describe + Sync, then
//! Bind + Execute + Sync); outside a transaction PgBouncer may hand the second to another server,
//! where the statement does not exist, or worse, where another client's does. And with its
//! statement cache off (`statement_cache_capacity(0)`) sqlx 0.9 still names every statement
//! (`sqlx_s_<n>`, counted per client connection) and never closes it, so two clients would
//! collide on one server. So here every operation runs in a transaction that first clears the
//! server's prepared statements and sets the search path (PgBouncer does not pass it on from the
//! startup packet): `BEGIN; DEALLOCATE ALL; SET LOCAL search_path = …`, one server for the whole
//! operation, no name left by another client. A statement that was already one transaction
//! costs nothing more (the three go in one round trip); a single one costs a `BEGIN` and a
//! `COMMIT` more.

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Execute, Executor, Postgres, SqlStr, Transaction};

/// The outbox's pool: an [`Executor`] like sqlx's own, which pins each operation to one server
/// when it goes through PgBouncer.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: PgPool,
    /// Through PgBouncer in transaction mode: what starts every operation's transaction.
    pinned: Option<String>,
}

impl Pool {
    /// `inner` as `opts` use it (its schema is a plain name: [`super::valid_schema`]).
    pub fn new(inner: PgPool, opts: &super::PgOptions) -> Self {
        let pinned = opts.pgbouncer.then(|| {
            format!(
                "BEGIN; DEALLOCATE ALL; SET LOCAL search_path = \"{}\"",
                opts.schema
            )
        });
        Self { inner, pinned }
    }

    /// Whether this pool goes through PgBouncer (no LISTEN, no session state).
    pub fn through_pgbouncer(&self) -> bool {
        self.pinned.is_some()
    }

    /// sqlx's pool, for what needs a session of its own (the wake-up listener).
    pub fn sqlx(&self) -> &PgPool {
        &self.inner
    }

    /// Starts a transaction (on one server, with no prepared statement left by another client,
    /// through PgBouncer).
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match &self.pinned {
            Some(begin) => {
                self.inner
                    .begin_with(sqlx::AssertSqlSafe(begin.clone()))
                    .await
            }
            None => self.inner.begin().await,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.inner.close().await;
    }
}

impl<'p> Executor<'p> for &'p Pool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.through_pgbouncer() {
            return (&self.inner).fetch_many(query);
        }
        // The whole answer is read inside the transaction, then handed out.
        stream::once(async move {
            let mut tx = self.begin().await?;
            let results: Vec<_> = (&mut *tx).fetch_many(query).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(stream::iter(results.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.through_pgbouncer() {
            return (&self.inner).fetch_optional(query);
        }
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.inner).prepare_with(sql, parameters)
    }
}
