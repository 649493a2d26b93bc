//! The dashboard and HTTP API (`serve --http`, `bundleq web`): pages
//! rendered on the server from compile-time templates (maud, escaping by
//! default), one stylesheet and one small script embedded in the binary,
//! and `/api/v1/…` answering with the CLI's `--json` shapes.
//!
//! Invariants: every request passes the [`gate`] first; every page and
//! endpoint reads and writes the one tenant the server was started for;
//! reads go through connections of the server's own (never the workers'),
//! and the overview's counts come from a cache refreshed in the background
//! ([`overview`]); a mutation goes through the same library calls as the
//! CLI's commands.

mod api;
mod gate;
mod http;
mod overview;
mod pages;
mod upload;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use bundleq::{Error, Home, Result, Store};

use http::{Request, Response, Server};

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Where to listen.
    pub addr: SocketAddr,
    /// More Host names to answer to.
    pub allow_hosts: Vec<String>,
    /// Refuse every change.
    pub read_only: bool,
}

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Parses `--http`'s address: `HOST:PORT`, or a port alone (on loopback).
pub fn parse_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!("{text:?} is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:7878)")
        })
}

/// What every request handler shares.
pub struct App {
    home: Home,
    tenant: Uuid,
    tenant_name: String,
    gate: gate::Gate,
    /// Connections to reuse (each request takes one, and gives it back).
    stores: Mutex<Vec<Store>>,
    /// The connection the others are opened like.
    origin: Mutex<Store>,
    overview: overview::Cache,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "App({})", self.home.root().display())
    }
}

/// Connections kept for reuse.
const KEEP_STORES: usize = 8;

impl App {
    /// Runs `f` with a connection of the server's own.
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let pooled = self.stores.lock().map(|mut s| s.pop()).unwrap_or(None);
        let mut store = match pooled {
            Some(s) => s,
            None => self
                .origin
                .lock()
                .map_err(|_| Error::InvalidArgument {
                    what: "web",
                    message: "the server's connection lock was poisoned".to_owned(),
                })?
                .reopen()?,
        };
        let out = f(&mut store);
        if let Ok(mut kept) = self.stores.lock()
            && kept.len() < KEEP_STORES
        {
            kept.push(store);
        }
        out
    }
}

/// A running dashboard.
#[derive(Debug)]
pub struct Web {
    server: Server,
    token_url: String,
}

impl Web {
    /// The URL that opens the dashboard with the token (sets the cookie).
    pub fn url(&self) -> &str {
        &self.token_url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops it (requests being answered finish on their own).
    pub fn stop(self) {
        self.server.stop();
    }
}

/// Starts the dashboard for `tenant` of `home` on `options.addr`. `store`
/// is opened like the caller's (read-only when the home is).
pub fn start(home: &Home, store: &Store, tenant: Uuid, options: &WebOptions) -> Result<Web> {
    let mut origin = store.reopen()?;
    let tenant_name = origin
        .tenants()?
        .into_iter()
        .find(|t| t.id == tenant)
        .map_or_else(|| tenant.to_string(), |t| t.name);
    let (token, saved) = gate::load_or_create_token(home.root())?;
    if !saved {
        log::warn!(
            "http: {} cannot be written by this user: the token in the URL below lasts only while this server runs",
            gate::token_path(home.root()).display()
        );
    }
    let listener = TcpListener::bind(options.addr).map_err(|source| Error::Io {
        action: "listen on",
        path: options.addr.to_string().into(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        action: "listen on",
        path: options.addr.to_string().into(),
        source,
    })?;
    if !addr.ip().is_loopback() {
        log::warn!(
            "http: listening on {addr}, beyond this machine: every request must carry the token"
        );
    }
    let gate = gate::Gate::new(token.clone(), addr, &options.allow_hosts, options.read_only);
    let app = Arc::new(App {
        home: home.clone(),
        tenant,
        tenant_name,
        gate,
        stores: Mutex::new(Vec::new()),
        origin: Mutex::new(origin),
        overview: overview::Cache::default(),
    });
    overview::warm(&app);
    let handler: Arc<http::Handler> = Arc::new(move |req: &mut Request| route(&app, req));
    let server = Server::start(listener, handler).map_err(|source| Error::Io {
        action: "start the http thread for",
        path: addr.to_string().into(),
        source,
    })?;
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    Ok(Web {
        server,
        token_url: format!("http://{host}/?token={token}"),
    })
}

/// What a path may not hold as is in a `Location`.
const PATH_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// Every request: the gate, then the page or endpoint, then the security
/// headers.
fn route(app: &Arc<App>, req: &mut Request) -> Response {
    let response = match app.gate.admit(req) {
        Err(refusal) => {
            if req.path.starts_with("/api/") {
                api::error_json(refusal.status, &String::from_utf8_lossy(&refusal.body))
            } else {
                refusal
            }
        }
        Ok(access) => {
            if req.method == "GET" && req.query("token").is_some() && access.authorised {
                // Opened from the printed URL: keep the token in a cookie
                // and take it out of the address bar.
                let mut rest = form_urlencoded::Serializer::new(String::new());
                for (k, v) in req.query.iter().filter(|(k, _)| k != "token") {
                    rest.append_pair(k, v);
                }
                let rest = rest.finish();
                // Only a path of this server: `//host` would leave it.
                let path: String = format!("/{}", req.path.trim_start_matches(['/', '\\']))
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                let path: String =
                    percent_encoding::utf8_percent_encode(&path, PATH_UNSAFE).collect();
                let location = if rest.is_empty() {
                    path
                } else {
                    format!("{path}?{rest}")
                };
                Response::see_other(&location)
                    .with("Set-Cookie", &gate::token_cookie(app.gate.token()))
            } else if req.path.starts_with("/api/") {
                api::route(app, req)
            } else {
                pages::route(app, req, access)
            }
        }
    };
    gate::secure(response)
}
