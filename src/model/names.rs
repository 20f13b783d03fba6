//! The queue's two names as types: [`NotificationId`] (a row's key, the caller's handle and the
//! provider's idempotency key) and [`ChannelName`] (a configured channel, a row's route). Both are
//! text everywhere they leave the daemon (JSON, SQL columns, the OpenAPI document), so each is a
//! transparent wrapper around a `String` that the stores bind and read as text; inside, a
//! function that wants an id cannot be handed a channel name.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

macro_rules! text_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The text of the name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The owned text, for a caller that keeps a `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        /// Documented as the plain string it is on the wire (inlined, no schema of its own),
        /// so the OpenAPI document does not change.
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                <String as schemars::JsonSchema>::schema_name()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <String as schemars::JsonSchema>::json_schema(generator)
            }
        }

        /// Debug-formatted as the quoted string it is, so a message that quotes a name with
        /// `{:?}` reads as it did when names were strings.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                Self(s.clone())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> Self {
                n.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.0.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(value).map(Self)
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <String as sqlx::Decode<'r, DB>>::decode(value).map(Self)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

text_name! {
    /// A notification's id: the key of its row, the handle the caller gets back, the idempotency
    /// key each send carries to the provider.
    NotificationId
}

impl NotificationId {
    /// A fresh id: a UUIDv7, so ids sort by when they were made.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

text_name! {
    /// A configured channel's name (`[channels.<name>]`): the route a row is queued on.
    ChannelName
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_plain_json_string() {
        let id = NotificationId::from("01J9");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"01J9\"");
        let back: NotificationId = serde_json::from_str("\"01J9\"").unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn an_id_is_documented_as_a_string() {
        let schema = schemars::schema_for!(NotificationId);
        assert_eq!(schema.get("type"), Some(&serde_json::json!("string")));
    }

    #[test]
    fn a_name_quoted_in_a_message_reads_as_the_string() {
        let name = ChannelName::from("slack");
        assert_eq!(
            format!("no channel named {name:?}"),
            "no channel named \"slack\""
        );
    }

    #[test]
    fn a_channel_name_is_stored_and_read_as_sqlite_text() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let name = ChannelName::from("sms");
        let (text, back): (String, ChannelName) = db
            .query_row("SELECT ?1, ?1", [&name], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((text.as_str(), back), ("sms", name));
    }
}
