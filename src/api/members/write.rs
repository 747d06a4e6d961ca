//! Creating and changing members through the Member aggregate (the unique-email rule is
//! `crate::members`'), answering with the member as the read model then shows it.

use aggregates::{
    AttributionContext, CompEndReason, EmailAddress, Labels, MemberCommand, MemberName,
    MemberSource, Note, ValueError,
};
use chrono::Utc;
use poem_openapi::types::MaybeUndefined;
use uuid::Uuid;

use super::json::{
    ComplimentaryRequest, CreateMemberRequest, CreateSourceDto, MemberView, UpdateMemberRequest,
};
use super::queries::{find_member, CreatedView};
use super::MembersApi;
use crate::api::problem::{command_error, db_error, FieldError, Problem};
use crate::api::state::RequestId;
use crate::members::{self, CreateMemberError, NewMember};
use crate::store::{Actor, EventMetadata};

/// Collects every invalid field instead of stopping at the first.
#[derive(Default)]
struct Validation(Vec<FieldError>);

impl Validation {
    fn check<T>(&mut self, field: &str, result: Result<T, ValueError>) -> Option<T> {
        result
            .map_err(|e| self.0.push(FieldError::new(field, e.reason())))
            .ok()
    }

    fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.0))
        }
    }
}

impl MembersApi {
    pub(super) async fn create_member(
        &self,
        request_id: &RequestId,
        body: CreateMemberRequest,
    ) -> Result<MemberView, Problem> {
        let mut v = Validation::default();
        let email = v.check("email", EmailAddress::parse(&body.email));
        let name = v.check(
            "name",
            body.name.as_deref().map(MemberName::parse).transpose(),
        );
        let note = v.check("note", body.note.as_deref().map(Note::parse).transpose());
        let labels = v.check(
            "labels",
            Labels::parse(body.labels.as_deref().unwrap_or_default()),
        );
        v.finish()?;
        let (Some(email), Some(name), Some(note), Some(labels)) = (email, name, note, labels)
        else {
            return Err(Problem::internal());
        };
        let source = match body.source.unwrap_or(CreateSourceDto::Admin) {
            CreateSourceDto::Admin => MemberSource::Admin,
            CreateSourceDto::Api => MemberSource::Api,
            CreateSourceDto::Import => MemberSource::Import,
        };

        let context = match source {
            MemberSource::Api => AttributionContext::Api,
            MemberSource::Import => AttributionContext::Import,
            _ => AttributionContext::Admin,
        };
        let new = NewMember {
            email: email.clone(),
            name: name.flatten(),
            note: note.flatten(),
            labels: labels.clone(),
            source,
            attribution: Some(aggregates::attribution::for_context(context)),
            newsletters: Vec::new(),
        };
        let view = CreatedView {
            email: email.into(),
            name: new.name.clone().map(MemberName::into_inner),
            note: new.note.clone().map(Note::into_inner),
            labels: labels.into_inner(),
            source,
        };
        // Answered from the command's fields, as the inline member_list row was written from
        // its event in the same transaction: no read back (`tests/api/members.rs` checks that
        // the answer equals a GET of the member).
        let (member_id, at) = members::create(&self.state.members, new, metadata(request_id))
            .await
            .map_err(create_error)?;
        Ok(view.into_view(member_id, at))
    }

    pub(super) async fn update_member(
        &self,
        request_id: &RequestId,
        member_id: Uuid,
        body: UpdateMemberRequest,
    ) -> Result<MemberView, Problem> {
        let mut v = Validation::default();
        let email = body
            .email
            .as_deref()
            .and_then(|e| v.check("email", EmailAddress::parse(e)));
        let name = match body.name {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(name) => v.check("name", MemberName::parse(&name)),
        };
        let note = match body.note {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(note) => v.check("note", Note::parse(&note)),
        };
        let labels = body
            .labels
            .as_deref()
            .and_then(|l| v.check("labels", Labels::parse(l)));
        v.finish()?;

        let aggregate_id = member_id.to_string();
        if name.is_some() || note.is_some() || labels.is_some() {
            let command = MemberCommand::UpdateMember {
                name,
                note,
                labels,
                at: Utc::now(),
            };
            self.state
                .members
                .execute(&aggregate_id, command, metadata(request_id))
                .await
                .map_err(command_error)?;
        }
        if let Some(email) = email {
            members::change_email(&self.state.members, member_id, email, metadata(request_id))
                .await
                .map_err(create_error)?;
        }
        find_member(&self.state, member_id)
            .await?
            .ok_or_else(|| Problem::not_found("no member has this id"))
    }
}

impl MembersApi {
    /// Gives member `member_id` the body's tier for free, or changes the one they have.
    pub(super) async fn set_complimentary(
        &self,
        request_id: &RequestId,
        member_id: Uuid,
        body: ComplimentaryRequest,
    ) -> Result<(), Problem> {
        use chrono::Datelike;
        if find_member(&self.state, member_id).await?.is_none() {
            return Err(Problem::not_found("no member has this id"));
        }
        let now = Utc::now();
        let mut errors = Vec::new();
        let archived: Option<bool> = sqlx::query_scalar("SELECT archived FROM tiers WHERE id = $1")
            .bind(body.tier_id)
            .fetch_optional(&self.state.pool)
            .await
            .map_err(db_error)?;
        match archived {
            None => errors.push(FieldError::new("tier_id", "no tier has this id")),
            Some(true) => errors.push(FieldError::new("tier_id", "the tier is archived")),
            Some(false) => {}
        }
        if body.until.is_some_and(|until| until <= now) {
            errors.push(FieldError::new("until", "must be in the future"));
        } else if body.until.is_some_and(|until| until.year() > 9999) {
            errors.push(FieldError::new("until", "must be before the year 10000"));
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let command = MemberCommand::GrantComp {
            tier_id: body.tier_id,
            until: body.until,
            at: now,
        };
        self.state
            .members
            .execute(&member_id.to_string(), command, metadata(request_id))
            .await
            .map_err(command_error)?;
        Ok(())
    }

    /// Takes member `member_id`'s complimentary access away; a no-op without one.
    pub(super) async fn end_complimentary(
        &self,
        request_id: &RequestId,
        member_id: Uuid,
    ) -> Result<(), Problem> {
        let command = MemberCommand::EndComp {
            reason: CompEndReason::Revoked,
            at: Utc::now(),
        };
        self.state
            .members
            .execute(&member_id.to_string(), command, metadata(request_id))
            .await
            .map_err(command_error)?;
        Ok(())
    }
}

/// An erasure that did not happen, as a problem.
pub(crate) fn erase_problem(err: crate::erasure::EraseError) -> Problem {
    use crate::erasure::EraseError;
    match err {
        EraseError::NotFound => Problem::not_found("no member has this id"),
        EraseError::ActiveSubscriptions(ids) => Problem::conflict(
            "active-subscriptions",
            format!(
                "the member has subscriptions that have not ended ({}); cancel them first, \
                 or set ERASURE_ACTIVE_SUBSCRIPTIONS=cancel",
                ids.join(", ")
            ),
        ),
        EraseError::NoStripe => Problem::conflict(
            "stripe-not-configured",
            "erasing this member needs Stripe calls and STRIPE_SECRET_KEY is not set",
        ),
        EraseError::Stripe(err) => {
            crate::api::purchases::stripe_problem(err, "nothing was erased, retry")
        }
        EraseError::Command(err) => command_error(err),
        EraseError::Database(err) => db_error(err),
    }
}

fn metadata(request_id: &RequestId) -> EventMetadata {
    EventMetadata::for_request(&request_id.0, Actor::Admin)
}

fn create_error(err: CreateMemberError) -> Problem {
    match err {
        CreateMemberError::EmailTaken => {
            Problem::conflict("email-taken", "another member has this email")
                .with_field("email", "is already used by another member")
        }
        CreateMemberError::Store(err) => command_error(err),
        CreateMemberError::Database(err) => db_error(err),
    }
}
