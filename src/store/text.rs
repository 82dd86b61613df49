//! The one conversion between the domain's enums and their text in the
//! database: written with [`StoredText::stored`], read back with
//! [`StoredText::from_stored`], which refuses an unknown value with one error.

use crate::domain::DomainError;
use crate::domain::confirmation::ConfirmedAction;
use crate::domain::permission::Permission;
use crate::domain::playback::SigningAlgorithm;
use crate::domain::role::Role;
use crate::domain::session::EndReason;
use crate::domain::user::UserState;

/// A domain enum stored as text: its spelling is the enum's `as_str`.
pub(crate) trait StoredText: Copy + Sized + 'static {
    /// What the value is, for the error on an unknown one.
    const KIND: &'static str;
    /// Every value.
    const ALL: &'static [Self];

    /// The value's spelling in the database.
    fn stored(self) -> &'static str;

    /// The value spelled `stored` in the database.
    fn from_stored(stored: &str) -> Result<Self, DomainError> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.stored() == stored)
            .ok_or_else(|| unknown(Self::KIND, stored))
    }
}

/// The one error for a stored value that no variant spells.
fn unknown(kind: &str, stored: &str) -> DomainError {
    DomainError::Internal(format!("stored {kind} {stored:?} is unknown"))
}

/// Implements [`StoredText`] over the enum's `as_str`, for the variants
/// listed: the match makes leaving one out a compile error.
macro_rules! stored_text {
    ($kind:literal, $type:ident { $($variant:ident),+ $(,)? }) => {
        impl StoredText for $type {
            const KIND: &'static str = $kind;
            const ALL: &'static [Self] = &[$($type::$variant),+];

            fn stored(self) -> &'static str {
                match self {
                    $($type::$variant)|+ => self.as_str(),
                }
            }
        }
    };
}

stored_text!(
    "role",
    Role {
        NanoAdmin,
        NanoUser,
        NanoReadOnly
    }
);
stored_text!("user state", UserState { Active, Suspended });
stored_text!(
    "confirmed action",
    ConfirmedAction {
        DeleteUser,
        RenewTokenKey,
        RotateApiKey,
        SuspendUser,
    }
);
stored_text!(
    "session end reason",
    EndReason {
        Logout,
        Revoked,
        RefreshReused,
        PasswordChanged,
        PasswordReset,
        TokenKeyRenewed,
        UserSuspended,
    }
);
stored_text!("signing algorithm", SigningAlgorithm { EdDsa, Rs256 });

/// An API token's permissions, by their ids (the list is the domain's own).
impl StoredText for Permission {
    const KIND: &'static str = "permission";
    const ALL: &'static [Self] = &Permission::ALL;

    fn stored(self) -> &'static str {
        self.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: StoredText + PartialEq + std::fmt::Debug>() {
        for value in T::ALL {
            assert_eq!(T::from_stored(value.stored()).ok(), Some(*value));
        }
        let spellings: std::collections::HashSet<_> = T::ALL.iter().map(|v| v.stored()).collect();
        assert_eq!(
            spellings.len(),
            T::ALL.len(),
            "{} spellings are distinct",
            T::KIND
        );
        assert!(matches!(
            T::from_stored("no such value"),
            Err(DomainError::Internal(_))
        ));
    }

    #[test]
    fn every_stored_enum_round_trips_and_refuses_an_unknown_value() {
        round_trips::<Role>();
        round_trips::<UserState>();
        round_trips::<ConfirmedAction>();
        round_trips::<EndReason>();
        round_trips::<SigningAlgorithm>();
        round_trips::<Permission>();
    }
}
