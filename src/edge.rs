//! The HTTP edge's settings: which proxies may name the client's address, which browser origins
//! may call the public endpoints, the checkout limits, and how long a slow client is waited
//! for. On the config floor (the server's settings flatten them), so it imports nothing of the
//! crate but the rate-limit shape; the middleware using them is `api::edge`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use poem::http::HeaderMap;

use crate::rate_limit::Limit;

#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// Proxies (CIDRs or addresses, comma-separated) whose forwarding header names the client's
    /// address. Unset: the peer's address is the client's.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies append the client's address to.
    #[arg(
        long,
        env = "TRUSTED_PROXY_HEADER",
        value_enum,
        default_value_t = ForwardedHeader::XForwardedFor
    )]
    pub trusted_proxy_header: ForwardedHeader,
    /// Browser origins (`https://example.com`) that may call the public endpoints (sign-in,
    /// checkout, license validation, the member's own `/v1/me`), comma-separated. Unset: no
    /// CORS headers at all.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Checkout requests one IP address may make per hour (counted by every instance together).
    #[arg(long, env = "CHECKOUT_LIMIT_PER_IP", default_value_t = 60)]
    pub checkout_limit_per_ip: u32,
    /// Checkout requests for one email per hour (counted by every instance together).
    #[arg(long, env = "CHECKOUT_LIMIT_PER_EMAIL", default_value_t = 10)]
    pub checkout_limit_per_email: u32,
    /// Seconds a connection may stay without reading or writing a byte before it is closed.
    /// 0: never.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// Seconds a client has, from a request's first byte, to send all its headers; a slower
    /// one (headers a byte at a time) is disconnected. 0: never.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body; a slower one gets 408.
    #[arg(long, env = "REQUEST_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub request_body_timeout_secs: u64,
    /// Largest CSV file `POST /v1/members/imports` takes, in MiB. Its body is streamed to the
    /// database rather than read whole, each part within `REQUEST_BODY_TIMEOUT_SECS` of the
    /// previous one.
    #[arg(long, env = "MEMBER_IMPORT_MAX_MB", default_value_t = 512)]
    pub member_import_max_mb: u64,
}

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

impl EdgeConfig {
    /// The edge's settings; `public_url` decides HSTS.
    pub fn settings(&self, public_url: &str) -> anyhow::Result<EdgeSettings> {
        let hour = Duration::from_secs(3600);
        let cors_allowed_origins = self
            .cors_allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(|o| {
                url::Url::parse(o)
                    .ok()
                    .map(|u| u.origin())
                    .filter(url::Origin::is_tuple)
                    .map(|origin| origin.ascii_serialization())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "CORS_ALLOWED_ORIGINS: {o:?} is not an origin like https://example.com"
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(EdgeSettings {
            trusted_proxies: TrustedProxies {
                nets: self.trusted_proxies.clone(),
                header: self.trusted_proxy_header,
            },
            cors_allowed_origins,
            checkout_per_ip: Limit {
                max: self.checkout_limit_per_ip,
                window: hour,
            },
            checkout_per_email: Limit {
                max: self.checkout_limit_per_email,
                window: hour,
            },
            idle_timeout: (self.http_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.http_idle_timeout_secs)),
            header_timeout: (self.http_header_timeout_secs > 0)
                .then(|| Duration::from_secs(self.http_header_timeout_secs)),
            body_timeout: Duration::from_secs(self.request_body_timeout_secs.max(1)),
            upload_max_bytes: self.member_import_max_mb.max(1).saturating_mul(1024 * 1024),
            hsts: public_url.starts_with("https://"),
        })
    }
}

/// What the HTTP edge runs with.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub trusted_proxies: TrustedProxies,
    /// Origins (`https://example.com`) answered with CORS headers on the public endpoints.
    pub cors_allowed_origins: Vec<String>,
    pub checkout_per_ip: Limit,
    pub checkout_per_email: Limit,
    /// How long a connection may do nothing before it is closed.
    pub idle_timeout: Option<Duration>,
    /// How long a request's header block may take to arrive, from its first byte.
    pub header_timeout: Option<Duration>,
    /// How long a client has to send a request's body (an upload's: each part of it).
    pub body_timeout: Duration,
    /// Largest upload (a member import's CSV file).
    pub upload_max_bytes: u64,
    /// Whether responses carry `Strict-Transport-Security` (`PUBLIC_URL` is https).
    pub hsts: bool,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            trusted_proxies: TrustedProxies::default(),
            cors_allowed_origins: Vec::new(),
            checkout_per_ip: Limit {
                max: 60,
                window: hour,
            },
            checkout_per_email: Limit {
                max: 10,
                window: hour,
            },
            idle_timeout: Some(Duration::from_secs(60)),
            header_timeout: Some(Duration::from_secs(10)),
            body_timeout: Duration::from_secs(30),
            upload_max_bytes: 512 * 1024 * 1024,
            hsts: false,
        }
    }
}

/// The proxies trusted to name the client, and the header they name it in.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    pub nets: Vec<IpNet>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { nets, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. The peer's, unless the peer is a trusted proxy: then the
    /// forwarding header is read right to left (each proxy appends the address it was reached
    /// from), skipping trusted hops; the first untrusted address is the client. Anything a
    /// client wrote itself sits left of that and is never read. An entry that is not an address
    /// stops the walk at the last trusted hop.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        // Several header lines are one list, in order.
        let entries: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let hop = match self.header {
                ForwardedHeader::XForwardedFor => parse_address(entry),
                ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_address),
            };
            let Some(hop) = hop else { break };
            client = hop.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`.
fn parse_address(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .or_else(|_| raw.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(raw)
                .parse::<IpAddr>()
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn proxies(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| parse_net(n).expect("net")).collect(),
            header,
        )
    }

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name, HeaderValue::from_static(v));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            trusted.client_ip(ip("198.51.100.7"), &h),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_walk_skips_trusted_hops_from_the_right_and_ignores_what_the_client_wrote() {
        let trusted = proxies(
            &["10.0.0.0/8", "192.168.1.1"],
            ForwardedHeader::XForwardedFor,
        );
        // The client claimed 1.1.1.1; the edge proxy appended the client's real address, an
        // inner proxy appended the edge proxy's.
        let h = headers(
            "x-forwarded-for",
            &["1.1.1.1, 203.0.113.9", "192.168.1.1:5555"],
        );
        assert_eq!(trusted.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_without_a_header_is_the_client() {
        let trusted = proxies(&["127.0.0.1/32"], ForwardedHeader::XForwardedFor);
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9, unknown, 10.0.0.2"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let trusted = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &["for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https, For=10.0.0.5"],
        );
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &h), ip("2001:db8::7"));
        // X-Forwarded-For is not read when the proxies write Forwarded.
        let xff = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &xff), ip("10.0.0.1"));
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_its_ipv4_network() {
        let trusted = proxies(&["127.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            trusted.client_ip(ip("::ffff:127.0.0.1"), &h),
            ip("203.0.113.9")
        );
    }

    fn config() -> EdgeConfig {
        EdgeConfig {
            trusted_proxies: Vec::new(),
            trusted_proxy_header: ForwardedHeader::XForwardedFor,
            cors_allowed_origins: vec!["https://Members.Example.com/signin".into()],
            checkout_limit_per_ip: 1,
            checkout_limit_per_email: 1,
            http_idle_timeout_secs: 0,
            http_header_timeout_secs: 0,
            request_body_timeout_secs: 1,
            member_import_max_mb: 1,
        }
    }

    #[test]
    fn hsts_follows_an_https_public_url_and_origins_are_normalised() {
        let https = config().settings("https://x.test").expect("valid");
        assert!(https.hsts);
        assert_eq!(https.cors_allowed_origins, ["https://members.example.com"]);
        assert_eq!(https.idle_timeout, None, "0 turns it off");
        assert!(!config().settings("http://x.test").expect("valid").hsts);
    }

    #[test]
    fn bad_settings_name_their_variable() {
        assert!(parse_net("10.0.0.0/33").is_err());
        let config = EdgeConfig {
            cors_allowed_origins: vec!["not a url".into()],
            ..config()
        };
        let err = config.settings("https://x.test").expect_err("refused");
        assert!(err.to_string().contains("CORS_ALLOWED_ORIGINS"), "{err}");
    }
}
