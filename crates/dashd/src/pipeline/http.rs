//! Runs a flow's `http` action: the request the engine asked for, bounded in time and
//! size, refused towards loopback and private networks unless allowed, and its result
//! turned into the event the engine expects.

use std::net::IpAddr;
use std::time::Duration;

use dash_core::flow::engine::{HttpOutcome, HttpRequest};

/// Largest response body read, in bytes.
const MAX_BODY: usize = 1 << 20;

/// Makes the request and reports how it went (never panics, never hangs past the
/// request's timeout).
pub async fn run(
    client: &reqwest::Client,
    request: &HttpRequest,
    allow_private: bool,
) -> HttpOutcome {
    let timeout = Duration::from_millis(request.timeout_ms.max(1));
    match tokio::time::timeout(timeout, attempt(client, request, allow_private, timeout)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => HttpOutcome::Failed { error },
        Err(_) => HttpOutcome::Failed {
            error: format!("timed out after {} ms", request.timeout_ms),
        },
    }
}

async fn attempt(
    client: &reqwest::Client,
    request: &HttpRequest,
    allow_private: bool,
    timeout: Duration,
) -> Result<HttpOutcome, String> {
    let url = reqwest::Url::parse(&request.url)
        .map_err(|err| format!("bad URL {:?}: {err}", request.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs are allowed, not {}",
            url.scheme()
        ));
    }
    if !allow_private {
        check_public(&url).await?;
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
    let mut response = builder.send().await.map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| err.to_string())? {
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

/// Refuses URLs whose host is, or resolves to, a non-public address.
async fn check_public(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| format!("cannot resolve {host}: {err}"))?
            .map(|addr| addr.ip())
            .collect(),
    };
    match addresses.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(format!(
            "{host} is a private or local address ({ip}); set pipeline.allow_private_http to allow it"
        )),
        None => Ok(()),
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let client = reqwest::Client::new();
        let request = HttpRequest {
            request_id: 1,
            method: "GET".into(),
            url: "http://127.0.0.1:9/".into(),
            headers: vec![],
            body: None,
            timeout_ms: 2000,
        };
        match run(&client, &request, false).await {
            HttpOutcome::Failed { error } => assert!(error.contains("private or local"), "{error}"),
            other => panic!("{other:?}"),
        }
        let bad = HttpRequest {
            url: "ftp://example.com/".into(),
            ..request
        };
        assert!(matches!(
            run(&client, &bad, true).await,
            HttpOutcome::Failed { .. }
        ));
    }
}
