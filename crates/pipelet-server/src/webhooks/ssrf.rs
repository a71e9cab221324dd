//! The guard against server-side request forgery through webhook URLs: a webhook must
//! not make the server POST to itself, its private network or a cloud metadata service.
//!
//! [`check_url`] runs at create (scheme, credentials, length, literal IPs, `localhost`
//! names); [`resolve_checked`] runs at delivery too and refuses a host if ANY of its
//! resolved addresses is forbidden, so a DNS answer that changed since the create (a
//! rebinding) cannot slip through. The caller connects to the returned addresses only.
//! `--webhook-allow-private` (`allow_private`) lifts the address rules, never the others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// A resolver that hangs must not hold a create (or the delivery loop) for long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses kept from one lookup (a name with hundreds is not a webhook receiver).
const MAX_ADDRESSES: usize = 32;

/// Parses and checks a webhook URL: `http` or `https`, no `user:password@`, at most
/// [`MAX_URL_LEN`] bytes, a host that is not a `localhost` name nor (unless
/// `allow_private`) a forbidden literal IP. The error says what is wrong, for a 422.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the webhook URL is {} bytes long; at most {MAX_URL_LEN} are allowed",
            url.len()
        ));
    }
    let parsed = Url::parse(url.trim()).map_err(|e| {
        format!("{url:?} is not a valid URL ({e}); send an http:// or https:// URL")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the webhook URL must be http:// or https://, not {}://",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the webhook URL must not carry a user name or password (user:password@host)".into(),
        );
    }
    match parsed.host() {
        None => return Err("the webhook URL has no host".into()),
        Some(Host::Domain(name)) => check_name(name, allow_private)?,
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private)?,
    }
    Ok(parsed)
}

/// Resolves the URL's host and returns the addresses to connect to, or an error if the
/// host does not resolve or (unless `allow_private`) any address it resolves to is
/// forbidden.
pub async fn resolve_checked(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    resolve(url, allow_private).await.map_err(|e| match e {
        Refusal::Unresolved(e) | Refusal::Forbidden(e) => e,
    })
}

/// The check of a create: like [`resolve_checked`], but a host that does not resolve
/// (yet, or during a DNS outage) is accepted, since delivery resolves and checks again
/// before every try; only a host that resolves to a forbidden address is refused.
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<(), String> {
    match resolve(url, allow_private).await {
        Ok(_) | Err(Refusal::Unresolved(_)) => Ok(()),
        Err(Refusal::Forbidden(e)) => Err(e),
    }
}

/// Why [`resolve`] gave no addresses.
enum Refusal {
    /// The lookup failed or timed out (may work later).
    Unresolved(String),
    /// The URL or an address it resolves to is not allowed.
    Forbidden(String),
}

async fn resolve(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, Refusal> {
    let port = url.port_or_known_default().ok_or_else(|| {
        Refusal::Forbidden("the webhook URL has no port and no known default port".into())
    })?;
    match url.host() {
        None => Err(Refusal::Forbidden("the webhook URL has no host".into())),
        Some(Host::Ipv4(ip)) => {
            check_ip(IpAddr::V4(ip), allow_private).map_err(Refusal::Forbidden)?;
            Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)])
        }
        Some(Host::Ipv6(ip)) => {
            check_ip(IpAddr::V6(ip), allow_private).map_err(Refusal::Forbidden)?;
            Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)])
        }
        Some(Host::Domain(name)) => {
            check_name(name, allow_private).map_err(Refusal::Forbidden)?;
            resolve_host(name, port, allow_private).await
        }
    }
}

/// Resolves `name` and checks every address (the name rules are the caller's).
async fn resolve_host(
    name: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refusal> {
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| {
            Refusal::Unresolved(format!(
                "resolving the webhook host {name:?} took longer than 5 s"
            ))
        })?
        .map_err(|e| {
            Refusal::Unresolved(format!("the webhook host {name:?} does not resolve: {e}"))
        })?;
    let addresses: Vec<SocketAddr> = lookup.take(MAX_ADDRESSES).collect();
    if addresses.is_empty() {
        return Err(Refusal::Unresolved(format!(
            "the webhook host {name:?} resolves to no address"
        )));
    }
    if !allow_private && let Some(bad) = addresses.iter().find(|a| is_forbidden_ip(a.ip())) {
        return Err(Refusal::Forbidden(format!(
            "the webhook host {name:?} resolves to {}, a loopback, private, link-local or \
             metadata address; webhooks go to public addresses only (the server's \
             --webhook-allow-private lifts this)",
            bad.ip()
        )));
    }
    Ok(addresses)
}

/// `localhost` and `*.localhost` are refused by name whatever they resolve to (RFC 6761
/// lets resolvers answer them with loopback without asking DNS).
fn check_name(name: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(format!(
            "the webhook host {name:?} is this server itself; webhooks go to public \
             addresses only (the server's --webhook-allow-private lifts this)"
        ));
    }
    Ok(())
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if !allow_private && is_forbidden_ip(ip) {
        return Err(format!(
            "the webhook host {ip} is a loopback, private, link-local, multicast or metadata \
             address; webhooks go to public addresses only (the server's \
             --webhook-allow-private lifts this)"
        ));
    }
    Ok(())
}

/// Whether a webhook may not be sent to `ip`: loopback, private (RFC 1918), CGNAT,
/// link-local (with the cloud metadata 169.254.169.254), unique-local (with AWS's
/// fd00:ec2::254), unspecified, multicast, broadcast, reserved, benchmarking and
/// documentation ranges; IPv6 forms that embed an IPv4 address are judged by it.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || a == 127
        || (a == 169 && b == 254) // link-local, metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        if s[5] == 0 && s[6] == 0 {
            // ::, ::1 and the rest of ::/96 (not IPv4-compatible in practice).
            return true;
        }
        return forbidden_v4(v4_of(s[6], s[7]));
    }
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(v4_of(s[6], s[7]));
    }
    // 6to4 (2002::/16) embeds an IPv4 address in the next 32 bits.
    if s[0] == 0x2002 && forbidden_v4(v4_of(s[1], s[2])) {
        return true;
    }
    (s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7, with fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
}

fn v4_of(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden_ip(text.parse().unwrap())
    }

    #[test]
    fn forbidden_ipv4_ranges() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
    }

    #[test]
    fn public_ipv4_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn forbidden_ipv6_ranges() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
        ] {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
        for ip in ["2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn url_rules() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("http://example.com:8080/hook?a=1", false).is_ok());
        for (url, why) in [
            ("ftp://example.com/", "http:// or https://"),
            ("file:///etc/passwd", "http:// or https://"),
            ("gopher://example.com/", "http:// or https://"),
            ("not a url", "not a valid URL"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            ("http://127.0.0.1/", "loopback"),
            ("http://10.0.0.1/", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://[fd00:ec2::254]/", "metadata"),
            // WHATWG parsing turns these spellings into 127.0.0.1 and 0.0.0.0.
            ("http://2130706433/", "loopback"),
            ("http://0x7f.1/", "loopback"),
            ("http://0/", "loopback"),
            ("http://localhost/", "this server"),
            ("http://LOCALHOST./", "this server"),
            ("http://api.localhost:9000/", "this server"),
        ] {
            let err = check_url(url, false).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, false).unwrap_err().contains("at most"));
    }

    #[test]
    fn allow_private_lifts_only_the_address_rules() {
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url("http://localhost/hook", true).is_ok());
        assert!(check_url("http://[::1]/", true).is_ok());
        assert!(check_url("ftp://127.0.0.1/", true).is_err());
        assert!(check_url("http://u:p@127.0.0.1/", true).is_err());
    }

    #[tokio::test]
    async fn literal_ips_are_checked_without_dns() {
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(resolve_checked(&url, false).await.is_err());
        let addrs = resolve_checked(&url, true).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:9".parse().unwrap()]);
        let url = Url::parse("https://[2606:4700::1111]/").unwrap();
        assert_eq!(
            resolve_checked(&url, false).await.unwrap(),
            vec!["[2606:4700::1111]:443".parse().unwrap()]
        );
    }

    /// A NAME that resolves to loopback is refused after resolution (the DNS rebinding
    /// case): `localhost` resolves through the hosts file on any machine, offline.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let Err(Refusal::Forbidden(err)) = resolve_host("localhost", 80, false).await else {
            panic!("localhost must resolve to a forbidden address");
        };
        assert!(
            err.contains("resolves to 127.0.0.1") || err.contains("resolves to ::1"),
            "{err}"
        );
        let Ok(addrs) = resolve_host("localhost", 80, true).await else {
            panic!("localhost resolves");
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        // And through the public entry point, which refuses the name before resolving.
        let url = Url::parse("http://localhost/").unwrap();
        assert!(resolve_checked(&url, false).await.is_err());
        assert!(resolve_checked(&url, true).await.is_ok());
    }

    /// At create a name that does not resolve passes (delivery checks again); one that
    /// resolves to a forbidden address does not.
    #[tokio::test]
    async fn unresolvable_names_pass_the_create_check_only() {
        let url = Url::parse("https://no-such-host.invalid/hook").unwrap();
        assert!(check_resolved(&url, false).await.is_ok());
        assert!(resolve_checked(&url, false).await.is_err());
        let url = Url::parse("http://10.1.2.3/hook").unwrap();
        assert!(check_resolved(&url, false).await.is_err());
        assert!(check_resolved(&url, true).await.is_ok());
    }

    /// The machine's own host name resolves to 127.x in many hosts files: when it does,
    /// it must be refused though its name is not `localhost`.
    #[tokio::test]
    async fn own_hostname_resolving_to_loopback_is_refused() {
        let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
            return;
        };
        let name = name.trim();
        let Ok(all) = tokio::net::lookup_host((name, 80)).await else {
            return;
        };
        let all: Vec<SocketAddr> = all.collect();
        if all.is_empty() || !all.iter().any(|a| is_forbidden_ip(a.ip())) {
            eprintln!("{name} does not resolve to a forbidden address here; nothing to check");
            return;
        }
        let url = Url::parse(&format!("http://{name}:8080/hook")).unwrap();
        let err = resolve_checked(&url, false).await.unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        assert!(resolve_checked(&url, true).await.is_ok());
    }
}
