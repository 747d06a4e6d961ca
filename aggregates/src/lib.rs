//! The memberledger domain: aggregates, their commands, events and errors, and the
//! validated values they are built from. Pure logic: no I/O, no SQL.

pub mod member;
pub mod values;

pub use cqrs_es;
pub use member::{Member, MemberCommand, MemberError, MemberEvent, MemberSource, MemberStatus};
pub use values::{EmailAddress, Labels, MemberName, Note, ValueError};
