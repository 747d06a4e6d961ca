//! What `serve` says once at start: which parts are on and which are off (webhooks without a
//! secret, mail without SMTP, Stripe without a key), and warnings for settings that cannot be
//! right. An operator's first hour goes into finding out why nothing happens; one summary
//! answers most of it. [`report`] is pure, so each sentence is tested without a server.

use crate::config::Settings;

/// How loudly a line is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    pub text: String,
}

fn info(text: impl Into<String>) -> Line {
    Line {
        level: Level::Info,
        text: text.into(),
    }
}

fn warn(text: impl Into<String>) -> Line {
    Line {
        level: Level::Warn,
        text: text.into(),
    }
}

/// The summary of `settings`, one line per part, warnings after the part they concern.
pub fn report(settings: &Settings) -> Vec<Line> {
    let mut lines = vec![info(format!("public URL: {}", settings.public_url))];
    lines.push(info(if settings.admin_token.is_some() {
        "admin API: ADMIN_TOKEN is set (stored tokens work too)"
    } else {
        "admin API: stored tokens only (ADMIN_TOKEN is unset)"
    }));
    webhooks(settings, &mut lines);
    stripe_api(settings, &mut lines);
    mail(settings, &mut lines);
    lines
}

/// Logs the summary through tracing.
pub fn log(lines: &[Line]) {
    for line in lines {
        match line.level {
            Level::Info => tracing::info!(target: "memberledger::startup", "{}", line.text),
            Level::Warn => tracing::warn!(target: "memberledger::startup", "{}", line.text),
        }
    }
}

fn webhooks(settings: &Settings, lines: &mut Vec<Line>) {
    let stripe = &settings.stripe;
    if stripe.webhook_secrets.is_empty() {
        lines.push(warn(
            "Stripe webhooks: STRIPE_WEBHOOK_SECRET is unset; POST /webhooks/stripe verifies with \
             the secrets `memberledger stripe setup` stored, and answers 503 while there are none",
        ));
        return;
    }
    let processing = if stripe.workers == 0 {
        "stored only, not processed (STRIPE_WORKERS=0)".to_owned()
    } else {
        format!("processed by {} worker(s)", stripe.workers)
    };
    lines.push(info(format!(
        "Stripe webhooks: on, {} signing secret(s); events are {processing}",
        stripe.webhook_secrets.len()
    )));
    let several = stripe.webhook_secrets.len() > 1;
    for (i, secret) in stripe.webhook_secrets.iter().enumerate() {
        if let Some(why) = webhook_secret_problem(secret) {
            let which = if several {
                format!("STRIPE_WEBHOOK_SECRET (secret {} of the list)", i + 1)
            } else {
                "STRIPE_WEBHOOK_SECRET".to_owned()
            };
            lines.push(warn(format!(
                "{which} cannot be right: {why}; every delivery it should verify is refused"
            )));
        }
    }
}

/// Why a webhook signing secret cannot be one Stripe issued, if it cannot.
fn webhook_secret_problem(secret: &str) -> Option<String> {
    if secret
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Some("it contains spaces or quotes".to_owned());
    }
    match secret.strip_prefix("whsec_") {
        Some("") => Some("it is `whsec_` with nothing after it".to_owned()),
        Some(_) => None,
        None => Some(format!(
            "it does not start with `whsec_` ({})",
            what_it_looks_like(secret)
        )),
    }
}

fn stripe_api(settings: &Settings, lines: &mut Vec<Line>) {
    let stripe = &settings.stripe;
    let Some(key) = &stripe.secret_key else {
        lines.push(warn(
            "Stripe API: off, STRIPE_SECRET_KEY is unset; checkout answers 503 and customers \
             named only by id in an event cannot be fetched",
        ));
        return;
    };
    let base = stripe
        .api_base
        .as_deref()
        .map(|b| format!(" at {b}"))
        .unwrap_or_default();
    match secret_key_problem(key) {
        Some(why) => {
            lines.push(info(format!("Stripe API: on{base}")));
            lines.push(warn(format!(
                "STRIPE_SECRET_KEY cannot be right: {why}; calls to Stripe will be refused"
            )));
        }
        None => {
            let mode = if key.contains("_live_") {
                "live"
            } else {
                "test"
            };
            lines.push(info(format!("Stripe API: on{base}, {mode} mode")));
        }
    }
}

/// Why a secret API key cannot be one Stripe issued, if it cannot.
fn secret_key_problem(key: &str) -> Option<String> {
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Some("it contains spaces or quotes".to_owned());
    }
    for prefix in ["sk_test_", "sk_live_", "rk_test_", "rk_live_"] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return rest
                .is_empty()
                .then(|| format!("it is `{prefix}` with nothing after it"));
        }
    }
    Some(format!(
        "it does not start with `sk_` or `rk_` ({})",
        what_it_looks_like(key)
    ))
}

/// A hint at what was pasted instead, by its prefix (never the value).
fn what_it_looks_like(value: &str) -> &'static str {
    if value.starts_with("pk_") {
        "it is a publishable key"
    } else if value.starts_with("whsec_") {
        "it is a webhook signing secret"
    } else if value.starts_with("sk_") || value.starts_with("rk_") {
        "it is an API key"
    } else if value.starts_with("we_") {
        "it is a webhook endpoint's id"
    } else {
        "not a Stripe value"
    }
}

fn mail(settings: &Settings, lines: &mut Vec<Line>) {
    match &settings.mail.smtp_url {
        Some(url) => {
            // Only scheme, host and port: the URL may carry a password.
            let place = url::Url::parse(url)
                .ok()
                .and_then(|u| {
                    let host = u.host_str()?.to_owned();
                    Some(match u.port() {
                        Some(port) => format!("{}://{host}:{port}", u.scheme()),
                        None => format!("{}://{host}", u.scheme()),
                    })
                })
                .unwrap_or_else(|| "an SMTP_URL that is not a URL".to_owned());
            lines.push(info(format!(
                "mail: sign-in emails are sent through {place}, from {}",
                settings.mail.from
            )));
        }
        None if crate::mail::may_log_contents(settings) => lines.push(warn(
            "mail: no SMTP_URL; sign-in codes and magic links are written to this log \
             (development only)",
        )),
        None => lines.push(warn(
            "mail: no SMTP_URL, and PUBLIC_URL is https; sign-in emails are NOT sent (nor \
             logged), so members cannot sign in: set SMTP_URL",
        )),
    }
    lines.push(info(format!(
        "sign-in: magic links open {}",
        settings.auth.link_base
    )));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(settings: &Settings) -> Vec<String> {
        report(settings)
            .into_iter()
            .filter(|l| l.level == Level::Warn)
            .map(|l| l.text)
            .collect()
    }

    fn text(settings: &Settings) -> String {
        report(settings)
            .into_iter()
            .map(|l| l.text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn configured() -> Settings {
        let mut s = Settings {
            public_url: "https://members.example.com".to_owned(),
            admin_token: Some("t".to_owned()),
            ..Settings::default()
        };
        s.stripe.webhook_secrets = vec!["whsec_abcdef0123456789".to_owned()];
        s.stripe.secret_key = Some("sk_live_51abc".to_owned());
        s.mail.smtp_url = Some("smtp://user:hunter2@mail.example.com:587".to_owned());
        s
    }

    #[test]
    fn a_fully_configured_server_has_no_warnings() {
        let s = configured();
        assert_eq!(warnings(&s), Vec::<String>::new());
        let text = text(&s);
        assert!(
            text.contains("Stripe webhooks: on, 1 signing secret(s)"),
            "{text}"
        );
        assert!(text.contains("Stripe API: on, live mode"), "{text}");
        assert!(
            text.contains("sent through smtp://mail.example.com:587"),
            "{text}"
        );
    }

    #[test]
    fn the_smtp_password_is_never_in_the_summary() {
        assert!(!text(&configured()).contains("hunter2"));
    }

    #[test]
    fn a_bare_server_says_what_is_off() {
        let s = Settings::default();
        let warnings = warnings(&s);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("STRIPE_WEBHOOK_SECRET is unset"));
        assert!(warnings[1].contains("STRIPE_SECRET_KEY is unset"));
        assert!(warnings[2].contains("codes and magic links are written to this log"));
    }

    #[test]
    fn mail_without_smtp_on_https_is_not_logged_and_says_so() {
        let mut s = configured();
        s.mail.smtp_url = None;
        let warnings = warnings(&s);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("NOT sent"), "{warnings:?}");
    }

    #[test]
    fn a_webhook_secret_with_nothing_after_the_prefix_is_flagged() {
        let mut s = configured();
        s.stripe.webhook_secrets = vec!["whsec_".to_owned()];
        let warnings = warnings(&s);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("`whsec_` with nothing after it"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_webhook_secret_that_is_another_kind_of_value_is_named() {
        let mut s = configured();
        s.stripe.webhook_secrets = vec!["whsec_good".to_owned(), "sk_test_123".to_owned()];
        let warnings = warnings(&s);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("secret 2 of the list"), "{warnings:?}");
        assert!(warnings[0].contains("an API key"), "{warnings:?}");
        assert!(
            !warnings[0].contains("sk_test_123"),
            "the value is not printed"
        );
    }

    #[test]
    fn secret_keys_that_cannot_be_right_are_flagged() {
        for (key, why) in [
            ("sk_test_", "`sk_test_` with nothing after it"),
            ("pk_live_abc", "a publishable key"),
            ("whsec_abc", "a webhook signing secret"),
            ("sk_test_abc def", "spaces or quotes"),
        ] {
            let mut s = configured();
            s.stripe.secret_key = Some(key.to_owned());
            let warnings = warnings(&s);
            assert_eq!(warnings.len(), 1, "{key}: {warnings:?}");
            assert!(warnings[0].contains(why), "{key}: {warnings:?}");
        }
    }

    #[test]
    fn restricted_and_test_keys_are_accepted() {
        for key in ["rk_live_abc", "sk_test_abc"] {
            let mut s = configured();
            s.stripe.secret_key = Some(key.to_owned());
            assert_eq!(warnings(&s), Vec::<String>::new(), "{key}");
        }
    }

    #[test]
    fn workers_off_is_said() {
        let mut s = configured();
        s.stripe.workers = 0;
        assert!(text(&s).contains("stored only, not processed (STRIPE_WORKERS=0)"));
    }
}
