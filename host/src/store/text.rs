//! Enums stored as TEXT. Each names its stored values once; a value read back
//! that the binary does not know is an error, never a silent default.

/// A stored value no variant of `kind` carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {kind} {value:?}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

/// Declares an enum with its stored names: `as_str`, `FromStr` (strict),
/// `Display`, and the store's `ToSql`/`FromSql`. Serde derives stay on the
/// declaration (utoipa reads their attributes); `store`'s tests check that
/// serde and the stored names agree.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::store::text::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err($crate::store::text::UnknownValue {
                        kind: $kind,
                        value: other.to_string(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::store::db::ToSql for $name {
            fn to_value(&self) -> $crate::store::db::Value<'_> {
                $crate::store::db::Value::Text(self.as_str())
            }
        }

        impl $crate::store::db::FromSql for $name {
            fn from_value(value: $crate::store::db::Value<'_>) -> Result<Self, String> {
                String::from_value(value)?.parse().map_err(|e: $crate::store::text::UnknownValue| e.to_string())
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use crate::store::health::State;
    use crate::store::mirrors::UpdateStatus;
    use crate::store::{
        AuthMethod, ConflictStatus, Direction, RefAction, Resolution, RunStatus, Store, Trigger,
    };

    fn agree<T: Serialize + Copy + std::fmt::Debug>(all: &[T], stored: fn(T) -> &'static str) {
        for value in all {
            let json = serde_json::to_value(value).unwrap();
            assert_eq!(
                json,
                stored(*value),
                "{value:?}: serde and the database disagree"
            );
        }
    }

    #[test]
    fn the_api_shows_what_the_database_stores() {
        agree(Direction::ALL, Direction::as_str);
        agree(AuthMethod::ALL, AuthMethod::as_str);
        agree(RunStatus::ALL, RunStatus::as_str);
        agree(Trigger::ALL, Trigger::as_str);
        agree(RefAction::ALL, RefAction::as_str);
        agree(UpdateStatus::ALL, UpdateStatus::as_str);
        agree(ConflictStatus::ALL, ConflictStatus::as_str);
        agree(Resolution::ALL, Resolution::as_str);
        agree(State::ALL, State::as_str);
    }

    #[test]
    fn an_unknown_stored_value_is_an_error_not_a_default() {
        let store = Store::for_test();
        let settings = crate::store::MirrorSettings::pull("a/b", "https://h/a/b", "h");
        let mirror = store
            .with(|c| crate::store::mirrors::insert(c, &settings))
            .unwrap();
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO health_states (mirror_id, state, changed_at) VALUES (?1, 'weird', '')",
                    [mirror.mirror_id],
                )
            })
            .unwrap();
        let read = store.with(|c| crate::store::health::last_state(c, mirror.mirror_id));
        let message = read.unwrap_err().to_string();
        assert!(
            message.contains("unexpected health state \"weird\""),
            "{message}"
        );
    }
}
