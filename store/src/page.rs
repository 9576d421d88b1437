//! Newest-first, filtered, cursor-paged reads of an audit table: the one query shape behind
//! both audit endpoints.

use chrono::{DateTime, Utc};

use crate::Result;
use crate::store::Store;

enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
    Bool(bool),
}

/// A `SELECT ... WHERE` under construction; placeholders are numbered as binds are added.
pub(crate) struct Page {
    sql: String,
    binds: Vec<Bind>,
}

impl Page {
    /// Starts from `select` (`SELECT columns FROM table`).
    pub(crate) fn new(select: &str) -> Self {
        Self {
            sql: format!("{select} WHERE 1 = 1"),
            binds: Vec::new(),
        }
    }

    fn filter(mut self, column: &str, op: &str, bind: Bind) -> Self {
        self.binds.push(bind);
        self.sql
            .push_str(&format!(" AND {column} {op} ${}", self.binds.len()));
        self
    }

    /// `column = value` when a value is given.
    pub(crate) fn eq(self, column: &str, value: Option<&String>) -> Self {
        match value {
            Some(v) => self.filter(column, "=", Bind::Text(v.clone())),
            None => self,
        }
    }

    /// `column = value` for a flag, when given.
    pub(crate) fn flag(self, column: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.filter(column, "=", Bind::Bool(v)),
            None => self,
        }
    }

    /// The time range, the cursor (ids below `before_id`), newest first, at most `limit`.
    pub(crate) fn window(
        mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Self {
        if let Some(v) = from {
            self = self.filter("created_at", ">=", Bind::Time(v));
        }
        if let Some(v) = to {
            self = self.filter("created_at", "<", Bind::Time(v));
        }
        if let Some(v) = before_id {
            self = self.filter("id", "<", Bind::Int(v));
        }
        self.binds.push(Bind::Int(limit.max(0)));
        self.sql
            .push_str(&format!(" ORDER BY id DESC LIMIT ${}", self.binds.len()));
        self
    }
}

impl Store {
    /// Runs `page` and maps its rows to `R`.
    pub(crate) async fn fetch_page<R>(&self, page: &Page) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let rows: Vec<R> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(&page.sql);
            for bind in &page.binds {
                query = match bind {
                    Bind::Text(v) => query.bind(v.as_str()),
                    Bind::Time(v) => query.bind(*v),
                    Bind::Int(v) => query.bind(*v),
                    Bind::Bool(v) => query.bind(*v),
                };
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }
}
