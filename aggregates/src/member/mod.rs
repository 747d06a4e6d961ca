//! The Member aggregate: who a member is (email, name, note, labels) and where they came from.

mod aggregate;
mod command;
mod event;
mod status;
#[cfg(test)]
mod tests;

pub use aggregate::Member;
pub use command::{MemberCommand, MemberError};
pub use event::MemberEvent;
pub use status::{Comp, CompEndReason, LoginMethod, MemberSource, MemberStatus};
