//! Hand-written statements that each connection prepares once and then reuses.
//!
//! `diesel::sql_query` marks its statement unsafe to cache, so Postgres parses and plans it
//! again on every execution; on the create path that was the single most expensive statement
//! (the outbox insert, re-parsed for every cluster). [`sql`] takes the same text, with `$1`,
//! `$2`, … placeholders, and the same `.bind::<SqlType, _>(value)` calls, but builds the
//! statement from its parts, so diesel-async's statement cache keys it by its text and runs
//! the prepared statement from then on. Results load exactly as with `sql_query` (by column
//! name, `QueryableByName`).
//!
//! The text must not contain a `$` followed by digits other than placeholders (no
//! dollar-quoted strings): every `$n` is replaced by the `n`-th bound value.

use std::borrow::Cow;
use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// A statement from SQL text; bind its placeholders with [`Sql::bind`].
pub(crate) fn sql(text: impl Into<Cow<'static, str>>) -> Sql<()> {
    Sql {
        text: text.into(),
        binds: (),
    }
}

/// A hand-written statement and its bound values. See the module documentation.
#[must_use = "a statement runs only when it is executed or loaded"]
pub(crate) struct Sql<B> {
    text: Cow<'static, str>,
    binds: B,
}

impl<B: Binds> Sql<B> {
    /// Binds the next placeholder (`$1` first) to `value`, sent as SQL type `ST`.
    pub(crate) fn bind<ST, V>(self, value: V) -> Sql<Bound<B, V, ST>> {
        Sql {
            text: self.text,
            binds: Bound {
                earlier: self.binds,
                value: Typed {
                    value,
                    sql_type: PhantomData,
                },
            },
        }
    }
}

/// The values bound so far, addressable by placeholder number.
pub(crate) trait Binds {
    /// How many values are bound.
    const COUNT: usize;

    /// Appends every bound value to `values`, `$1` first.
    fn values<'b>(&'b self, values: &mut Vec<&'b dyn BoundValue>);
}

/// One bound value, which pushes itself as a bind parameter of its SQL type.
pub(crate) trait BoundValue {
    fn push<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

impl Binds for () {
    const COUNT: usize = 0;

    fn values<'b>(&'b self, _values: &mut Vec<&'b dyn BoundValue>) {}
}

/// One bound value on top of the earlier ones.
pub(crate) struct Bound<B, V, ST> {
    earlier: B,
    value: Typed<V, ST>,
}

/// A value and the SQL type it is sent as.
pub(crate) struct Typed<V, ST> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<V, ST> BoundValue for Typed<V, ST>
where
    V: ToSql<ST, Pg>,
    Pg: HasSqlType<ST>,
{
    fn push<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.value)
    }
}

impl<B, V, ST> Binds for Bound<B, V, ST>
where
    B: Binds,
    V: ToSql<ST, Pg>,
    Pg: HasSqlType<ST>,
{
    const COUNT: usize = B::COUNT + 1;

    fn values<'b>(&'b self, values: &mut Vec<&'b dyn BoundValue>) {
        self.earlier.values(values);
        values.push(&self.value);
    }
}

impl<B: Binds> QueryFragment<Pg> for Sql<B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Looked up by number, not by walking the chain of `Bound`s for each placeholder (as
        // many steps as values bound after it): a create binds 19 values, and each execution
        // walks its statement twice.
        let mut values = Vec::with_capacity(B::COUNT);
        self.binds.values(&mut values);
        let mut rest: &str = &self.text;
        while let Some(dollar) = rest.find('$') {
            let after = &rest[dollar + 1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                out.push_sql(&rest[..=dollar]);
            } else {
                out.push_sql(&rest[..dollar]);
                let n: usize = after[..digits].parse().map_err(|_| {
                    Error::QueryBuilderError(
                        format!("bad placeholder ${}", &after[..digits]).into(),
                    )
                })?;
                let value = n
                    .checked_sub(1)
                    .and_then(|i| values.get(i))
                    .ok_or_else(|| {
                        Error::QueryBuilderError(
                            format!("placeholder ${n} has no bound value").into(),
                        )
                    })?;
                value.push(out.reborrow())?;
            }
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }

    /// Always: the text is fixed and every value is a bind parameter. (The default walks the
    /// statement a third time per execution to find that out.)
    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// No static id: the statement cache keys these statements by their SQL text.
impl<B> QueryId for Sql<B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Sql<B> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use diesel::debug_query;
    use diesel::sql_types::{Array, Integer, Text};

    use super::*;

    #[test]
    fn placeholders_become_binds_in_order() {
        let statement = sql("SELECT $2::int, $1 || 'x$', $2, $1::text[] IS NULL")
            .bind::<Text, _>("a")
            .bind::<Integer, _>(7);
        // Every placeholder occurrence is its own bind, numbered as diesel pushes them.
        assert_eq!(
            debug_query::<Pg, _>(&statement).to_string(),
            r#"SELECT $1::int, $2 || 'x$', $3, $4::text[] IS NULL -- binds: [7, "a", 7, "a"]"#
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error() {
        let statement = sql("SELECT $1, $2").bind::<Array<Text>, _>(vec!["a"]);
        let mut builder = diesel::pg::PgQueryBuilder::default();
        let err = statement.to_sql(&mut builder, &Pg).unwrap_err();
        assert!(err.to_string().contains("placeholder $2"), "{err}");
    }

    #[test]
    fn statements_are_cacheable_by_text() {
        let statement = sql("SELECT $1").bind::<Integer, _>(1);
        assert!(statement.is_safe_to_cache_prepared(&Pg).unwrap());
        assert_eq!(<Sql<()> as QueryId>::query_id(), None);
    }
}
