//! Runs a flow's `http` action: the request the engine asked for, bounded in time and
//! size, refused towards loopback, private and other non-public networks unless allowed,
//! and its result turned into the event the engine expects.
//!
//! The guard sits where the connection is made, not beside it. The flow HTTP client
//! (built by [`client`]) resolves host names through [`PublicOnlyResolver`], which drops
//! every non-public address before the connector sees it: there is no check-then-resolve
//! gap a DNS rebinding could slip through. A literal IP address in the URL is never
//! resolved, so [`run`] checks it before sending. Proxies from the environment are
//! ignored, since a proxy would connect on our behalf. What counts as non-public is one
//! table per address family ([`V4_NON_PUBLIC`], [`V6_NON_PUBLIC`]) taken from the IANA
//! IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and updates).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dash_core::flow::engine::{HttpOutcome, HttpRequest};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Largest response body read, in bytes.
const MAX_BODY: usize = 1 << 20;

/// Builds the client flow HTTP actions use: `dashd/<version>` as user agent, no
/// redirects (each hop would need its own check), no proxy, and unless `allow_private`
/// the [`PublicOnlyResolver`] in front of the system resolver.
pub fn client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    client_with(allow_private, SystemLookup)
}

/// [`client`] with the host name lookup given (tests map names to chosen addresses).
fn client_with<L: Lookup>(allow_private: bool, lookup: L) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("dashd/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy from HTTP_PROXY & co. would resolve and connect for us, out of reach
        // of the resolver below.
        .no_proxy();
    if allow_private {
        builder.build()
    } else {
        builder
            .dns_resolver(Arc::new(PublicOnlyResolver::new(lookup)))
            .build()
    }
}

/// Makes the request and reports how it went (never panics, never hangs past the
/// request's timeout). `client` comes from [`client`] with the same `allow_private`.
pub async fn run(
    client: &reqwest::Client,
    request: &HttpRequest,
    allow_private: bool,
) -> HttpOutcome {
    let timeout = Duration::from_millis(request.timeout_ms.max(1));
    let started = std::time::Instant::now();
    let outcome =
        match tokio::time::timeout(timeout, attempt(client, request, allow_private, timeout)).await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => HttpOutcome::Failed { error },
            Err(_) => HttpOutcome::Failed {
                error: format!("timed out after {} ms", request.timeout_ms),
            },
        };
    // Never the query string or userinfo (tokens live there), never a body.
    let url = crate::telemetry::redact_url(&request.url);
    let duration_ms = started.elapsed().as_millis();
    match &outcome {
        HttpOutcome::Response { status, .. } => {
            tracing::debug!(method = %request.method, %url, status, duration_ms, "flow HTTP action answered");
        }
        HttpOutcome::Failed { error } => {
            tracing::debug!(method = %request.method, %url, %error, duration_ms, "flow HTTP action failed");
        }
    }
    outcome
}

async fn attempt(
    client: &reqwest::Client,
    request: &HttpRequest,
    allow_private: bool,
    timeout: Duration,
) -> Result<HttpOutcome, String> {
    let url = Url::parse(&request.url).map_err(|err| {
        format!(
            "bad URL {:?}: {err}",
            crate::telemetry::redact_url(&request.url)
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs are allowed, not {}",
            url.scheme()
        ));
    }
    if !allow_private {
        check_literal(&url)?;
    }
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|err| err.to_string())?;
    let mut builder = client.request(method, url).timeout(timeout);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        if serde_json::from_str::<serde_json::Value>(body).is_ok() {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        builder = builder.body(body.clone());
    }
    let mut response = builder.send().await.map_err(describe)?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err("the response is larger than 1 MiB".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(HttpOutcome::Response { status, body })
}

/// A request error with its causes (the resolver's refusal is a cause, several levels
/// down), without the URL, whose query may hold secrets.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Refuses a URL whose host is a literal non-public IP address: the connector uses such
/// an address as it is, without asking the resolver.
fn check_literal(url: &Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    // The URL parser writes every IPv4 spelling (decimal, octal, hex) of an http(s)
    // host as a dotted quad, and IPv6 in brackets; anything else is a name.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    match non_public_reason(ip) {
        Some(reason) => Err(format!(
            "{ip} is a non-public address ({reason}); set pipeline.allow_private_http to allow it"
        )),
        None => Ok(()),
    }
}

/// A host name lookup under way.
pub type LookingUp = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Looks up the addresses of a host name. The system resolver in production
/// ([`SystemLookup`]); tests give their own.
pub trait Lookup: Send + Sync + 'static {
    /// The addresses `host` resolves to.
    fn lookup(&self, host: String) -> LookingUp;
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> LookingUp {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    }
}

/// A resolver for reqwest that keeps only public addresses and fails the lookup when
/// none is left, so the client can never connect to a non-public address by name.
#[derive(Debug, Clone, Default)]
pub struct PublicOnlyResolver<L = SystemLookup> {
    lookup: L,
}

impl<L: Lookup> PublicOnlyResolver<L> {
    /// Filters what `lookup` finds.
    pub fn new(lookup: L) -> Self {
        Self { lookup }
    }
}

impl<L: Lookup> Resolve for PublicOnlyResolver<L> {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.lookup.lookup(host.clone());
        Box::pin(async move {
            let found = lookup
                .await
                .map_err(|err| format!("cannot resolve {host}: {err}"))?;
            let (public, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                found.into_iter().partition(|ip| is_public(*ip));
            if public.is_empty() {
                if refused.is_empty() {
                    return Err(format!("cannot resolve {host}: no addresses").into());
                }
                let refused = refused
                    .iter()
                    .map(|ip| format!("{ip}: {}", non_public_reason(*ip).unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(format!(
                    "{host} resolves only to non-public addresses ({refused}); set pipeline.allow_private_http to allow them"
                )
                .into());
            }
            // Port 0: the connector puts the URL's port in.
            let addrs: Addrs = Box::new(public.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    non_public_reason(ip).is_none()
}

/// Why an address is not public (the registry's name for its block), or `None` when it
/// is public.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:0:0/96): the packet goes to the embedded IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let bits = u128::from(v6);
            V6_NON_PUBLIC
                .iter()
                .find(|block| within(bits, u128::from(block.0), block.1, 128))
                .map(|block| block.2)
                .or_else(|| {
                    // Only 2000::/3 is global unicast; everything else is reserved by
                    // the IETF, whether or not the registry names it.
                    (!within(bits, u128::from(GLOBAL_UNICAST.0), GLOBAL_UNICAST.1, 128))
                        .then_some(GLOBAL_UNICAST.2)
                })
        }
    }
}

fn v4_reason(v4: Ipv4Addr) -> Option<&'static str> {
    let bits = u128::from(u32::from(v4));
    V4_NON_PUBLIC
        .iter()
        .find(|block| within(bits, u128::from(u32::from(block.0)), block.1, 32))
        .map(|block| block.2)
}

/// Whether `address` is in `network/prefix`, both `width` bits wide.
fn within(address: u128, network: u128, prefix: u8, width: u32) -> bool {
    let host_bits = width - u32::from(prefix);
    // A shift by the whole width (prefix 0) yields None on both sides: everything matches.
    address.checked_shr(host_bits) == network.checked_shr(host_bits)
}

/// A block of addresses: network, prefix length, and what it is.
type Block<A> = (A, u8, &'static str);

/// IPv4 blocks that are not public: the IANA IPv4 Special-Purpose Address Registry
/// (RFC 6890 and updates) plus multicast and the limited broadcast address. Blocks the
/// registry marks globally reachable but that a flow has no business calling (AS112,
/// AMT, relay anycast) are refused too.
pub const V4_NON_PUBLIC: &[Block<Ipv4Addr>] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\", RFC 791"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private-use, RFC 1918"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (CGN), RFC 6598",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback, RFC 1122"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local, RFC 3927"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private-use, RFC 1918"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments, RFC 6890",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (TEST-NET-1), RFC 5737",
    ),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112-v4, RFC 7535"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT, RFC 7450"),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "deprecated 6to4 relay anycast, RFC 7526",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private-use, RFC 1918"),
    (
        Ipv4Addr::new(192, 175, 48, 0),
        24,
        "direct delegation AS112 service, RFC 7534",
    ),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking, RFC 2544"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (TEST-NET-2), RFC 5737",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (TEST-NET-3), RFC 5737",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast, RFC 5771"),
    (
        Ipv4Addr::new(255, 255, 255, 255),
        32,
        "limited broadcast, RFC 919",
    ),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved, RFC 1112"),
];

/// IPv6 blocks that are not public: the IANA IPv6 Special-Purpose Address Registry
/// (RFC 6890 and updates), multicast and the deprecated site-local block. Addresses
/// that embed an IPv4 address for translation (NAT64, 6to4, Teredo, IPv4-compatible)
/// are refused whole rather than judged by the embedded address: the gateway that
/// translates them may sit inside a private network. IPv4-mapped addresses are judged
/// by their IPv4 address before this table is consulted.
pub const V6_NON_PUBLIC: &[Block<Ipv6Addr>] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        "unspecified, RFC 4291",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),
        128,
        "loopback, RFC 4291",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible (deprecated), RFC 4291",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "NAT64 well-known prefix, RFC 6052",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "NAT64 local-use prefix, RFC 8215",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only, RFC 6666",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "dummy prefix, RFC 9780",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (incl. Teredo, ORCHID), RFC 2928",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation, RFC 3849",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "6to4, RFC 3056",
    ),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        "direct delegation AS112 service, RFC 7534",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation, RFC 9637",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing (SRv6) SIDs, RFC 9602",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local, RFC 4193",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local, RFC 4291",
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated), RFC 3879",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast, RFC 4291",
    ),
];

/// The IPv6 global unicast space; an address outside it and outside the table above is
/// reserved by the IETF.
const GLOBAL_UNICAST: Block<Ipv6Addr> = (
    Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0),
    3,
    "outside the global unicast space 2000::/3, RFC 4291",
);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A block as the tests see it: first and last address (refused), and the addresses
    /// just before and after it when those are public.
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// Written out by hand from the registries, independent of the tables.
    const V4_CASES: &[Case] = &[
        ("0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
        (
            "10.0.0.0",
            "10.255.255.255",
            Some("9.255.255.255"),
            Some("11.0.0.0"),
        ),
        (
            "100.64.0.0",
            "100.127.255.255",
            Some("100.63.255.255"),
            Some("100.128.0.0"),
        ),
        (
            "127.0.0.0",
            "127.255.255.255",
            Some("126.255.255.255"),
            Some("128.0.0.0"),
        ),
        (
            "169.254.0.0",
            "169.254.255.255",
            Some("169.253.255.255"),
            Some("169.255.0.0"),
        ),
        (
            "172.16.0.0",
            "172.31.255.255",
            Some("172.15.255.255"),
            Some("172.32.0.0"),
        ),
        (
            "192.0.0.0",
            "192.0.0.255",
            Some("191.255.255.255"),
            Some("192.0.1.0"),
        ),
        (
            "192.0.2.0",
            "192.0.2.255",
            Some("192.0.1.255"),
            Some("192.0.3.0"),
        ),
        (
            "192.31.196.0",
            "192.31.196.255",
            Some("192.31.195.255"),
            Some("192.31.197.0"),
        ),
        (
            "192.52.193.0",
            "192.52.193.255",
            Some("192.52.192.255"),
            Some("192.52.194.0"),
        ),
        (
            "192.88.99.0",
            "192.88.99.255",
            Some("192.88.98.255"),
            Some("192.88.100.0"),
        ),
        (
            "192.168.0.0",
            "192.168.255.255",
            Some("192.167.255.255"),
            Some("192.169.0.0"),
        ),
        (
            "192.175.48.0",
            "192.175.48.255",
            Some("192.175.47.255"),
            Some("192.175.49.0"),
        ),
        (
            "198.18.0.0",
            "198.19.255.255",
            Some("198.17.255.255"),
            Some("198.20.0.0"),
        ),
        (
            "198.51.100.0",
            "198.51.100.255",
            Some("198.51.99.255"),
            Some("198.51.101.0"),
        ),
        (
            "203.0.113.0",
            "203.0.113.255",
            Some("203.0.112.255"),
            Some("203.0.114.0"),
        ),
        (
            "224.0.0.0",
            "239.255.255.255",
            Some("223.255.255.255"),
            None,
        ),
        ("255.255.255.255", "255.255.255.255", None, None),
        ("240.0.0.0", "255.255.255.255", None, None),
    ];

    /// Outside 2000::/3 every neighbour is reserved too, hence the `None`s there.
    const V6_CASES: &[Case] = &[
        ("::", "::", None, None),
        ("::1", "::1", None, None),
        ("::", "::ffff:ffff", None, None),
        ("64:ff9b::", "64:ff9b::ffff:ffff", None, None),
        (
            "64:ff9b:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        ("100::", "100::ffff:ffff:ffff:ffff", None, None),
        ("100:0:0:1::", "100::1:ffff:ffff:ffff:ffff", None, None),
        (
            "2001::",
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2001:200::"),
        ),
        (
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2001:db9::"),
        ),
        (
            "2002::",
            "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2003::"),
        ),
        (
            "2620:4f:8000::",
            "2620:4f:8000:ffff:ffff:ffff:ffff:ffff",
            Some("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff"),
            Some("2620:4f:8001::"),
        ),
        (
            "3fff::",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("3fff:1000::"),
        ),
        (
            "5f00::",
            "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "fe80::",
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "fec0::",
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "ff00::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
    ];

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn check(cases: &[Case]) {
        for (first, last, before, after) in cases {
            assert!(!is_public(ip(first)), "{first} is not public");
            assert!(!is_public(ip(last)), "{last} is not public");
            for neighbour in [before, after].into_iter().flatten() {
                assert!(is_public(ip(neighbour)), "{neighbour} is public");
            }
        }
    }

    #[test]
    fn every_special_purpose_ipv4_block_is_refused_and_its_neighbours_are_not() {
        check(V4_CASES);
        for block in V4_NON_PUBLIC {
            let network = block.0.to_string();
            assert!(
                V4_CASES.iter().any(|case| case.0 == network),
                "{network}/{} has no test case",
                block.1
            );
        }
    }

    #[test]
    fn every_special_purpose_ipv6_block_is_refused_and_its_neighbours_are_not() {
        check(V6_CASES);
        for block in V6_NON_PUBLIC {
            let network = block.0.to_string();
            assert!(
                V6_CASES.iter().any(|case| case.0 == network),
                "{network}/{} has no test case",
                block.1
            );
        }
    }

    #[test]
    fn ipv6_outside_global_unicast_is_refused() {
        for reserved in [
            "1::",
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "4000::",
            "e000::",
        ] {
            assert!(!is_public(ip(reserved)), "{reserved}");
        }
        for public in [
            "2000::",
            "2606:4700:4700::1111",
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_judged_or_refused() {
        // IPv4-mapped: judged by the IPv4 address.
        assert!(!is_public(ip("::ffff:127.0.0.1")));
        assert!(!is_public(ip("::ffff:198.18.0.1")));
        assert!(!is_public(ip("::ffff:100.64.0.1")));
        assert!(is_public(ip("::ffff:8.8.8.8")));
        // Translated forms: refused even around a public IPv4 address.
        for translated in [
            "::8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1::808:808",
            "2002:808:808::1",
            "2001:0:808:808::1",
        ] {
            assert!(!is_public(ip(translated)), "{translated}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip(public)), "{public}");
        }
    }

    /// A lookup that answers from a fixed map and counts its calls.
    #[derive(Debug, Clone, Default)]
    struct StaticLookup {
        names: HashMap<String, Vec<IpAddr>>,
        calls: Arc<AtomicUsize>,
    }

    impl StaticLookup {
        fn with(name: &str, addresses: &[&str]) -> Self {
            let mut lookup = Self::default();
            lookup
                .names
                .insert(name.to_owned(), addresses.iter().map(|a| ip(a)).collect());
            lookup
        }
    }

    impl Lookup for StaticLookup {
        fn lookup(&self, host: String) -> LookingUp {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let found = self.names.get(&host).cloned();
            Box::pin(async move {
                found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown name"))
            })
        }
    }

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    fn request(url: String) -> HttpRequest {
        HttpRequest {
            request_id: 1,
            method: "GET".into(),
            url,
            headers: vec![],
            body: None,
            timeout_ms: 5000,
        }
    }

    fn failure(outcome: HttpOutcome) -> String {
        match outcome {
            HttpOutcome::Failed { error } => error,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// A loopback listener nothing should ever connect to.
    fn trap() -> std::net::TcpListener {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// The request is over, so any connection it made is already in the accept queue.
    fn assert_untouched(listener: &std::net::TcpListener) {
        match listener.accept() {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("a connection from {peer} reached the listener"),
            Err(err) => panic!("{err}"),
        }
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_public_addresses() {
        let resolver = PublicOnlyResolver::new(StaticLookup::with(
            "mixed.test",
            &[
                "127.0.0.1",
                "93.184.216.34",
                "10.0.0.1",
                "::1",
                "2606:4700::1",
            ],
        ));
        let found: Vec<SocketAddr> = resolver
            .resolve(name("mixed.test"))
            .await
            .unwrap()
            .collect();
        assert_eq!(
            found,
            vec![
                SocketAddr::new(ip("93.184.216.34"), 0),
                SocketAddr::new(ip("2606:4700::1"), 0)
            ]
        );
    }

    #[tokio::test]
    async fn the_resolver_fails_when_only_non_public_addresses_are_left() {
        let resolver = PublicOnlyResolver::new(StaticLookup::with(
            "rebind.test",
            &["127.0.0.1", "198.18.0.1", "64:ff9b::a00:1"],
        ));
        let error = match resolver.resolve(name("rebind.test")).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err.to_string(),
        };
        assert!(
            error.contains("rebind.test resolves only to non-public addresses"),
            "{error}"
        );
        assert!(error.contains("198.18.0.1: benchmarking"), "{error}");
        assert!(error.contains("pipeline.allow_private_http"), "{error}");
    }

    #[tokio::test]
    async fn the_client_connects_only_through_the_filtering_resolver() {
        let listener = trap();
        let port = listener.local_addr().unwrap().port();
        let lookup = StaticLookup::with("rebind.test", &["127.0.0.1"]);
        let calls = lookup.calls.clone();
        let client = client_with(false, lookup).unwrap();
        let outcome = run(
            &client,
            &request(format!("http://rebind.test:{port}/?token=secret")),
            false,
        )
        .await;
        let error = failure(outcome);
        assert!(
            error.contains("resolves only to non-public addresses"),
            "{error}"
        );
        assert!(!error.contains("secret"), "the query leaked: {error}");
        // One resolution, made by the client itself: nothing checks first and resolves
        // again to connect.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_untouched(&listener);
    }

    #[tokio::test]
    async fn literal_non_public_addresses_are_refused_before_connecting() {
        let listener = trap();
        let port = listener.local_addr().unwrap().port();
        let lookup = StaticLookup::default();
        let calls = lookup.calls.clone();
        let client = client_with(false, lookup).unwrap();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            // 127.0.0.1 spelled as one decimal number.
            format!("http://2130706433:{port}/"),
            format!("http://0x7f.1:{port}/"),
        ] {
            let error = failure(run(&client, &request(url.clone()), false).await);
            assert!(error.contains("is a non-public address"), "{url}: {error}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_untouched(&listener);
    }

    #[tokio::test]
    async fn private_addresses_are_reached_when_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/answer",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"answer": 42})) }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = client(true).unwrap();
        let outcome = run(
            &client,
            &request(format!("http://127.0.0.1:{port}/answer")),
            true,
        )
        .await;
        server.abort();
        match outcome {
            HttpOutcome::Response { status, body } => {
                assert_eq!(status, 200);
                assert_eq!(body, serde_json::json!({"answer": 42}));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn only_http_and_https_are_allowed() {
        let client = client(true).unwrap();
        let error = failure(run(&client, &request("ftp://example.com/".into()), true).await);
        assert!(error.contains("only http and https"), "{error}");
    }
}
