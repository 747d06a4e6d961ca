//! A real SMTP server for the tests: maildev (npm, `maildev@2.2.1`), installed under
//! `target/maildev` if missing, started once on 127.0.0.1 and shared by test processes (its
//! ports are kept in `target/maildev/ports`); mail is read back through its REST API.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::helpers::free_port;

const VERSION: &str = "2.2.1";

#[derive(Clone, Copy, Debug)]
pub struct Maildev {
    pub smtp_port: u16,
    pub web_port: u16,
}

impl Maildev {
    pub fn smtp_url(self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// Every message to `address` so far, oldest first, but member emails (welcome, payment
    /// failed, ...: `X-Memberledger-Email`), which arrive on their own schedule: what a test
    /// asked for (sign-in codes, email-change links) is counted without them.
    pub async fn messages_to(self, address: &str) -> Vec<Value> {
        self.all_messages_to(address)
            .await
            .into_iter()
            .filter(|m| member_email_kind(m).is_none())
            .collect()
    }

    /// The member emails to `address` so far (`X-Memberledger-Email`), oldest first.
    pub async fn member_emails_to(self, address: &str) -> Vec<Value> {
        self.all_messages_to(address)
            .await
            .into_iter()
            .filter(|m| member_email_kind(m).is_some())
            .collect()
    }

    /// Waits for the member email of `kind` to `address` (the first of that kind).
    pub async fn member_email(self, address: &str, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let found = self
                .member_emails_to(address)
                .await
                .into_iter()
                .find(|m| member_email_kind(m) == Some(kind));
            if let Some(message) = found {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} email to {address} arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn all_messages_to(self, address: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/email", self.web_port);
        let all: Vec<Value> = match reqwest::get(&url).await {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        all.into_iter()
            .filter(|m| {
                m["to"].as_array().is_some_and(|to| {
                    to.iter().any(|t| {
                        t["address"]
                            .as_str()
                            .is_some_and(|a| a.eq_ignore_ascii_case(address))
                    })
                })
            })
            .collect()
    }

    /// Waits for the `n`th message (1-based) to `address`.
    pub async fn nth_message_to(self, address: &str, n: usize) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let messages = self.messages_to(address).await;
            if messages.len() >= n {
                return messages[n - 1].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no email #{n} to {address} arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Which member email `message` is (its `X-Memberledger-Email` header), if it is one.
pub fn member_email_kind(message: &Value) -> Option<&str> {
    message["headers"]["x-memberledger-email"].as_str()
}

/// The 6-digit code and the magic-link token in a sign-in email.
pub fn code_and_token(message: &Value) -> (String, String) {
    let text = message["text"].as_str().expect("a text body");
    let code_at = text.find("Your code: ").expect("a code in the email") + "Your code: ".len();
    let code = text[code_at..code_at + 6].to_owned();
    let token_at = text.find("token=").expect("a magic link in the email") + "token=".len();
    let token: String = text[token_at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (code, token)
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/maildev")
}

fn responds(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

pub async fn maildev() -> Maildev {
    static MAILDEV: OnceCell<Maildev> = OnceCell::const_new();
    *MAILDEV
        .get_or_init(|| async {
            tokio::task::spawn_blocking(start)
                .await
                .expect("maildev start task")
        })
        .await
}

#[expect(
    clippy::zombie_processes,
    reason = "maildev is shared with later test processes; .ci/run stops it"
)]
fn start() -> Maildev {
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("target/maildev");
    let ports_file = dir.join("ports");
    if let Ok(ports) = std::fs::read_to_string(&ports_file) {
        if let Some((smtp, web)) = ports.trim().split_once(' ') {
            if let (Ok(smtp_port), Ok(web_port)) = (smtp.parse(), web.parse()) {
                if responds(smtp_port) && responds(web_port) {
                    return Maildev {
                        smtp_port,
                        web_port,
                    };
                }
            }
        }
    }
    let bin = dir.join("node_modules/maildev/bin/maildev");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("maildev@{VERSION}"))
            .stdout(Stdio::null())
            .status()
            .expect("npm is needed to install maildev for the tests (apt-get install nodejs npm)");
        assert!(status.success(), "npm install maildev@{VERSION} failed");
    }
    let (smtp_port, web_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("maildev.log")).expect("maildev log");
    Command::new("node")
        .arg(&bin)
        .args(["--ip", "127.0.0.1", "--web-ip", "127.0.0.1"])
        .args([
            "--smtp",
            &smtp_port.to_string(),
            "--web",
            &web_port.to_string(),
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs maildev");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(responds(smtp_port) && responds(web_port)) {
        assert!(
            std::time::Instant::now() < deadline,
            "maildev did not start: see target/maildev/maildev.log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&ports_file, format!("{smtp_port} {web_port}")).expect("ports file");
    Maildev {
        smtp_port,
        web_port,
    }
}
