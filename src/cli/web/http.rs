//! The HTTP/1.1 server under the dashboard: one thread per connection up to
//! a cap, requests parsed by `httparse`, every read bounded in size and
//! time, one request per connection (`Connection: close`).
//!
//! Invariants: a connection never holds more than [`MAX_HEAD`] bytes of
//! request head, never waits longer than [`HEAD_TIMEOUT`] for it nor
//! [`BODY_TIMEOUT`] for a piece of body; at most [`MAX_CONNECTIONS`] are
//! served at once, the next ones get a 503 at once. Nothing here touches
//! the queue: a slow client costs one of these threads, never a worker.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may go silent while sending a body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest a body may arrive on average (after [`BODY_TIMEOUT`] of
/// grace): a client trickling bytes cannot hold a connection for ever.
pub const MIN_BODY_RATE: u64 = 64 * 1024;
/// How long a client may take to take a piece of the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// One request: its head parsed, its body still on the wire.
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's pairs, decoded.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    pub peer: SocketAddr,
    /// Body bytes read with the head.
    early: Vec<u8>,
    stream: TcpStream,
    /// The body's declared length (no body: 0).
    pub content_length: u64,
    body_read: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} from {}", self.method, self.path, self.peer)
    }
}

impl Request {
    /// A header's value (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter (the first, if repeated), empty ones as absent.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// True when the client is on this machine.
    pub fn is_loopback_peer(&self) -> bool {
        match self.peer.ip() {
            std::net::IpAddr::V4(a) => a.is_loopback(),
            std::net::IpAddr::V6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }

    /// The whole body, refused with 413 past `limit` bytes (before any of
    /// it is read when its declared length says so).
    pub fn body(&mut self, limit: u64) -> Result<Vec<u8>, Response> {
        let mut out = Vec::new();
        self.body_reader(limit)?
            .read_to_end(&mut out)
            .map_err(|e| read_failed(&e))?;
        Ok(out)
    }

    /// The body as a stream of exactly its declared length; refused with
    /// 413 when that is over `limit`.
    pub fn body_reader(&mut self, limit: u64) -> Result<impl Read + '_, Response> {
        if self.content_length > limit {
            return Err(too_large(limit));
        }
        if self.body_read {
            return Err(Response::text(500, "the request body was read already"));
        }
        self.body_read = true;
        if self
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let early = std::mem::take(&mut self.early);
        let deadline = Instant::now()
            + BODY_TIMEOUT
            + Duration::from_secs(self.content_length / MIN_BODY_RATE);
        Ok(io::Cursor::new(early)
            .chain(Paced {
                stream: &self.stream,
                deadline,
            })
            .take(self.content_length))
    }
}

/// A body's bytes from the connection, each read bounded by
/// [`BODY_TIMEOUT`] and all of them by the body's deadline.
struct Paced<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the body arrived too slowly",
            ));
        }
        self.stream.set_read_timeout(Some(left.min(BODY_TIMEOUT)))?;
        (&*self.stream).read(buf)
    }
}

/// A failed body read as a response: a timeout is 408, the rest 400.
pub fn read_failed(e: &io::Error) -> Response {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Response::text(408, "the request body stopped arriving")
        }
        _ => Response::text(400, &format!("the request body could not be read: {e}")),
    }
}

/// 413 for a body over `limit` bytes.
pub fn too_large(limit: u64) -> Response {
    Response::text(
        413,
        &format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// A response, written whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body of `content_type`.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body,
        }
    }

    /// A plain-text response (one line and a newline).
    pub fn text(status: u16, message: &str) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            format!("{message}\n").into_bytes(),
        )
    }

    /// A redirect after a form post (303 See Other).
    pub fn see_other(location: &str) -> Response {
        let mut r = Response::new(303, "text/plain; charset=utf-8", Vec::new());
        r.headers.push(("Location".to_owned(), location.to_owned()));
        r
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn write_to(&self, out: &mut impl Write, head_only: bool) -> io::Result<()> {
        write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        )?;
        for (n, v) in &self.headers {
            // Values are ours; never let one end the head early.
            let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            write!(out, "{n}: {v}\r\n")?;
        }
        out.write_all(b"\r\n")?;
        if !head_only {
            out.write_all(&self.body)?;
        }
        out.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What serves each request.
pub type Handler = dyn Fn(&mut Request) -> Response + Send + Sync;

/// A running server: its accept thread and the flag that stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` with `handler` on threads of its own until
    /// [`Server::stop`].
    pub fn start(listener: TcpListener, handler: Arc<Handler>) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bundleq-http".to_owned())
            .spawn(move || accept_loop(&listener, &handler, &flag))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread (connections being
    /// served finish on their own threads).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

/// Counts a connection while it is served.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, handler: &Arc<Handler>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else {
            // Out of descriptors, say: give the others a moment.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _slot = Slot(Arc::clone(&active));
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = Response::text(503, "too many connections; try again in a moment")
                .write_to(&mut &stream, false);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("bundleq-http-conn".to_owned())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &handler);
            });
        if let Err(e) = spawned {
            log::warn!("http: could not start a connection thread: {e}");
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Arc<Handler>) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut request = match read_head(stream.try_clone(), peer) {
        Ok(r) => r,
        Err(Some(response)) => {
            finish(&stream, &response, false);
            return;
        }
        Err(None) => return,
    };
    let head_only = request.method == "HEAD";
    let response = handler(&mut request);
    log::debug!("http: {request:?}: {}", response.status);
    // A body not read is not waited for: the connection closes after the
    // response.
    finish(&stream, &response, head_only);
}

/// Writes the response and closes the connection gently, so the client
/// reads the response even when it was still sending a body we refused.
fn finish(stream: &TcpStream, response: &Response, head_only: bool) {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    if response.write_to(&mut out, head_only).is_err() {
        return;
    }
    drop(out);
    let _ = stream.shutdown(Shutdown::Write);
    // Drain a little of what the client still sends, briefly.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 8192];
    let mut left: usize = 1024 * 1024;
    while left > 0 {
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads and parses a request head. `Err(None)`: the client went away
/// before saying anything worth answering.
fn read_head(stream: io::Result<TcpStream>, peer: SocketAddr) -> Result<Request, Option<Response>> {
    let mut stream = stream.map_err(|_| None)?;
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Some(Response::text(
                408,
                "the request head did not arrive in time",
            )));
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some(Response::text(
                    408,
                    "the request head did not arrive in time",
                )));
            }
            Err(_) => return Err(None),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(len)) => {
                let request = build(&parsed, peer)?;
                let early = buf[len..filled].to_vec();
                return finish_head(request, early, stream);
            }
            Ok(httparse::Status::Partial) if filled == buf.len() => {
                return Err(Some(Response::text(
                    431,
                    &format!("the request head is larger than {MAX_HEAD} bytes"),
                )));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Some(Response::text(
                    431,
                    &format!("more than {MAX_HEADERS} headers"),
                )));
            }
            Err(e) => {
                return Err(Some(Response::text(
                    400,
                    &format!("not an HTTP request: {e}"),
                )));
            }
        }
    }
}

/// The parts of a request head this server needs.
struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    peer: SocketAddr,
}

fn build(parsed: &httparse::Request<'_, '_>, peer: SocketAddr) -> Result<Head, Option<Response>> {
    let method = parsed.method.unwrap_or("GET").to_owned();
    let target = parsed.path.unwrap_or("/");
    if !target.starts_with('/') {
        return Err(Some(Response::text(
            400,
            "the request target must be a path",
        )));
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path: String = percent_encoding::percent_decode(raw_path.as_bytes())
        .decode_utf8()
        .map_err(|_| Some(Response::text(400, "the path is not UTF-8")))?
        .into_owned();
    let query = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| {
            Some(Response::text(
                400,
                &format!("header {} is not UTF-8", h.name),
            ))
        })?;
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Head {
        method,
        path,
        query,
        headers,
        peer,
    })
}

fn finish_head(head: Head, early: Vec<u8>, stream: TcpStream) -> Result<Request, Option<Response>> {
    let header = |n: &str| {
        head.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some() {
        return Err(Some(Response::text(
            411,
            "send the body with a Content-Length (chunked bodies are not taken)",
        )));
    }
    let lengths: Vec<&str> = head
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let content_length = match lengths.as_slice() {
        [] => 0,
        [one] => one
            .parse::<u64>()
            .map_err(|_| Some(Response::text(400, "Content-Length is not a number")))?,
        _ => {
            return Err(Some(Response::text(
                400,
                "more than one Content-Length header",
            )));
        }
    };
    Ok(Request {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        peer: head.peer,
        early,
        stream,
        content_length,
        body_read: false,
    })
}
