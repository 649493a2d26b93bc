//! Who may do what: the home's token, the Host allow-list, same-origin
//! checks for anything that changes the queue, and the security headers
//! every response carries.
//!
//! Rules: a request must name an allowed Host (DNS rebinding); a request
//! from another machine must carry the token; so must every mutation,
//! and a mutation made with the browser's cookie must also come from this
//! origin (`Sec-Fetch-Site` or `Origin`); `--read-only` refuses every
//! mutation whoever asks.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bundleq::{Error, Result};

use super::http::{Request, Response};

/// The cookie the browser keeps the token in.
pub const COOKIE: &str = "bundleq_token";

/// The file of a home that holds its token.
pub fn token_path(home_root: &Path) -> PathBuf {
    home_root.join("http-token")
}

/// The home's token: read from `<home>/http-token`, or made (random, 0600)
/// when there is none yet. On a home this user may not write (or whose
/// token file is another user's), a token for this server's life only,
/// and `false`.
pub fn load_or_create_token(home_root: &Path) -> Result<(String, bool)> {
    let path = token_path(home_root);
    let fresh = || {
        // 244 random bits from the system's generator, as hex.
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    };
    let cannot = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::InvalidArgument {
                    what: "http-token",
                    message: format!(
                        "{} does not hold a token (delete it to have a new one made)",
                        path.display()
                    ),
                });
            }
            Ok((token, true))
        }
        Err(e) if cannot(&e) => Ok((fresh(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = fresh();
            let created = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
            };
            let mut file = match created {
                Ok(f) => f,
                Err(e) if cannot(&e) => return Ok((token, false)),
                // Another server made it a moment ago: use that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return load_or_create_token(home_root);
                }
                Err(source) => {
                    return Err(Error::Io {
                        action: "create",
                        path,
                        source,
                    });
                }
            };
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|source| Error::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
            Ok((token, true))
        }
        Err(source) => Err(Error::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// The access rules of one server.
#[derive(Debug)]
pub struct Gate {
    token: String,
    /// Host names (without port) a request may name.
    hosts: Vec<String>,
    /// Listening on every address: any IP literal is a Host this server
    /// answers to (a DNS-rebinding page can only name a host name).
    any_ip: bool,
    port: u16,
    read_only: bool,
}

/// What a request may do, once let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// It carries the token (header or cookie).
    pub authorised: bool,
}

impl Gate {
    /// Rules for a server bound to `addr`, also answering to `extra_hosts`.
    pub fn new(token: String, addr: SocketAddr, extra_hosts: &[String], read_only: bool) -> Gate {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| (*h).to_owned())
            .collect();
        if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
            hosts.push(match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            });
        }
        if !addr.ip().is_loopback()
            && let Ok(name) = rustix::system::uname().nodename().to_str()
        {
            hosts.push(name.to_ascii_lowercase());
        }
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Gate {
            token,
            hosts,
            any_ip: addr.ip().is_unspecified(),
            port: addr.port(),
            read_only,
        }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Mutations are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Lets `req` in, or says why not.
    pub fn admit(&self, req: &Request) -> std::result::Result<Access, Response> {
        let host = req.header("host").unwrap_or("");
        if !self.host_allowed(host) {
            return Err(Response::text(
                403,
                &format!(
                    "Host {host:?} is not one this server answers to (start it with --allow-host NAME to add one)"
                ),
            ));
        }
        let bearer = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| self.matches(t.trim()));
        let cookie = cookie_value(req.header("cookie"), COOKIE).is_some_and(|t| self.matches(t));
        let query = req.query("token").is_some_and(|t| self.matches(t));
        let authorised = bearer || cookie || query;
        let mutation = !matches!(req.method.as_str(), "GET" | "HEAD");
        if req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
            && !bearer
        {
            return Err(Response::text(401, "the token is wrong"));
        }
        if !authorised && !req.is_loopback_peer() {
            return Err(Response::text(
                401,
                "a token is needed from another machine: open the URL `bundleq serve --http` printed, or send Authorization: Bearer <token> (the token is in <home>/http-token)",
            ));
        }
        if mutation {
            if self.read_only {
                return Err(Response::text(
                    403,
                    "this server is read-only: nothing can be changed through it",
                ));
            }
            if !authorised {
                return Err(Response::text(
                    401,
                    "changing the queue needs the token: send Authorization: Bearer <token> (the token is in <home>/http-token), or open the URL `bundleq serve --http` printed",
                ));
            }
            // The cookie rides along with any request the browser makes:
            // only this origin may use it to change anything.
            if !bearer && !self.same_origin(req, host) {
                return Err(Response::text(
                    403,
                    "refused: the request did not come from this dashboard (cross-site)",
                ));
            }
            if req
                .header("sec-fetch-site")
                .is_some_and(|s| s == "cross-site" || s == "same-site")
            {
                return Err(Response::text(
                    403,
                    "refused: the request came from another site",
                ));
            }
        }
        Ok(Access { authorised })
    }

    fn matches(&self, candidate: &str) -> bool {
        // Compared in constant time over the token's length.
        let (a, b) = (self.token.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p)) if !n.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) => {
                (n.to_owned(), p.parse::<u16>().ok())
            }
            _ => (host.clone(), None),
        };
        let ip_literal = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        port.is_none_or(|p| p == self.port)
            && (self.hosts.contains(&name) || (self.any_ip && ip_literal))
    }

    fn same_origin(&self, req: &Request, host: &str) -> bool {
        match (req.header("sec-fetch-site"), req.header("origin")) {
            (Some("same-origin"), _) => true,
            (Some(_), _) => false,
            (None, Some(origin)) => {
                origin == format!("http://{host}") || origin == format!("https://{host}")
            }
            (None, None) => false,
        }
    }
}

/// A cookie's value from a `Cookie` header.
pub fn cookie_value<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The headers every response carries: a strict Content-Security-Policy
/// (only this server's own CSS and script), no framing, no sniffing, no
/// referrer.
pub fn secure(mut r: Response) -> Response {
    for (n, v) in [
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ] {
        if !r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n)) {
            r.headers.push((n.to_owned(), v.to_owned()));
        }
    }
    r
}

/// The cookie that keeps the token in this browser.
pub fn token_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(addr: &str, extra: &[&str]) -> Gate {
        let extra: Vec<String> = extra.iter().map(|h| (*h).to_owned()).collect();
        Gate::new("ab".repeat(32), addr.parse().unwrap(), &extra, false)
    }

    #[test]
    fn hosts_are_allowed_by_name_port_and_address() {
        let local = gate("127.0.0.1:7878", &[]);
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST",
            "[::1]:7878",
            "[::1]",
        ] {
            assert!(local.host_allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "localhost:80",
            "127.0.0.1.evil.example:7878",
            "10.0.0.5:7878",
            "localhost:7878:7878",
        ] {
            assert!(!local.host_allowed(bad), "{bad}");
        }
        // Bound to one address: that address; to every address: any IP
        // literal, never an unknown name.
        let one = gate("10.0.0.5:7878", &["lab-queue.example.org"]);
        assert!(one.host_allowed("10.0.0.5:7878"));
        assert!(one.host_allowed("lab-queue.example.org:7878"));
        assert!(!one.host_allowed("10.0.0.6:7878"));
        let any = gate("0.0.0.0:7878", &[]);
        assert!(any.host_allowed("192.168.1.5:7878"));
        assert!(any.host_allowed("[fe80::1]:7878"));
        assert!(!any.host_allowed("rebound.evil.example:7878"));
    }

    #[test]
    fn cookies_are_found_by_name_only() {
        let h = Some("a=1; bundleq_token=xyz; bundleq_token_old=no");
        assert_eq!(cookie_value(h, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(Some("xbundleq_token=1"), COOKIE), None);
        assert_eq!(cookie_value(None, COOKIE), None);
    }
}
